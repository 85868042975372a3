"""The one command line: `python -m engine` (`engine.cli.main`) and its forensics reader
`python -m engine.replay` (`engine.cli.forensics`), sharing one usage error, one exit-code map
(`common`), one table printer and options declared once (`options`)."""
