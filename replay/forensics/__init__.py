"""Forensics over a recorded log, read-only and safe on a running service's log: `queries`
(timeline, state as of a seq or time), `summary` (one line per event), `explain` (the causal
chain behind an order), `verify` (hash chain, positions against a broker snapshot) and
`render` (text for people). `python -m engine.replay` is the command line over them."""
