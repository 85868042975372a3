"""Options declared once: the global ones every command takes, the knobs of a backtest
(shared by every point of a sweep), and the ones several commands of both command lines
take (`--json`, `--verbose` of the forensics reader, `--at-seq`/`--at`, `--no-plots`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def global_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes, before or after the command's name. On the
    subcommands their default is SUPPRESS, so a value given before the name is kept."""
    d: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    p.add_argument("--verbose", "-v", action="store_true",
                   help="show tracebacks, debug logs and every fill", **d)
    p.add_argument("--config", help="TOML settings file (default: mqd.toml, or $MQD_CONFIG)",
                   **d)
    p.add_argument("--data-dir", help="where logs and reports go (default: mqd-data)", **d)
    p.add_argument("--log", help="event log path (default: <data-dir>/events.sqlite; status: "
                                 "the most recent run's)", **d)


def run_flags(p: argparse.ArgumentParser) -> None:
    """The knobs of a backtest (and of every point of a sweep)."""
    p.add_argument("--strategy", required=True)
    p.add_argument("--data", required=True, action="append",
                   help=".csv/.parquet bar file(s) in any row order, a directory of them, or "
                        "an event log (repeatable)")
    p.add_argument("--from", dest="from_", help="first bar start (ISO, UTC if no offset)")
    p.add_argument("--to", help="stop before this bar start")
    p.add_argument("--cash", help="starting cash of the simulated account (dollar risk limits "
                                  "not set otherwise scale with it)")
    p.add_argument("--param", action="append", default=[], help="strategy parameter key=value")
    p.add_argument("--time-in-force", choices=("day", "gtc"),
                   help="the strategy's orders' time in force (strategy parameter)")
    p.add_argument("--fee-per-share", help="$ per share filled")
    p.add_argument("--fee-bps", help="fee in basis points of the fill's notional")
    p.add_argument("--min-fee", help="$ at least per fill")
    p.add_argument("--slippage-bps", help="market fills move this much against the order")
    p.add_argument("--volume-participation",
                   help="most of a bar's volume one order may fill (0-1]")
    p.add_argument("--zero-volume", choices=("no_fill", "fill"),
                   help="a bar with volume 0 fills nothing, or fills at its open "
                        "(sim.zero_volume)")
    p.add_argument("--assets", help="symbol eligibility CSV (symbol,tradable,fractionable"
                                    "[,shortable]); unlisted symbols trade as whole shares")
    p.add_argument("--tz", help="time zone of naive timestamps in the bar files (IANA name)")
    p.add_argument("--timeframe", choices=("1m", "5m", "15m", "30m", "1h", "1d"),
                   help="bar interval (default: inferred from the rows; 1d: one bar per "
                        "trading session)")
    p.add_argument("--symbol", help="symbol of a file without a symbol column (default: "
                                    "from its file name)")
    p.add_argument("--out", help="directory for the log and report")
    json_option(p)


def settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        out["data_dir"] = Path(args.data_dir)
    if getattr(args, "log", None):
        out["log_file"] = Path(args.log)
    return out


def json_option(p: argparse.ArgumentParser, helptext: str = "print JSON") -> None:
    p.add_argument("--json", action="store_true", help=helptext)


def no_plots_option(p: argparse.ArgumentParser, helptext: str = "no PNG plots or HTML") -> None:
    p.add_argument("--no-plots", action="store_true", help=helptext)


def verbose_option(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The forensics reader's --verbose, before or after the command's name (SUPPRESS on the
    subcommands: a value given before the name is kept)."""
    d: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks on errors", **d)


def as_of_options(p: argparse.ArgumentParser) -> None:
    """As of a seq or a time (default: the end of the log)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--at-seq", type=int, help="as of this seq")
    g.add_argument("--at", help="as of the last event recorded at or before this time")
