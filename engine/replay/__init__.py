"""`python -m engine.replay LOG <command>`: the thin entry point of the forensics command line,
`engine.cli.forensics`, over `replay.forensics` and `replay.backtest.report`."""
