"""`python -m engine.replay`: the forensics command line over `replay.forensics` and
`replay.report`. Nothing happens at import; see `engine.replay.cli.main`."""
