"""`python -m engine <command>`: run, demo, backtest, sweep, config, status, halt, resume,
dashboard. A module per command family (`run`, `backtest`, `status`, `dashboard`; the
forensics reader `python -m engine.replay` is `forensics`), imported when its command runs.

Errors are one clear line on stderr (`--verbose` for the traceback). Exit codes: 0 success,
1 the command ran but its check failed (e.g. a halt the broker did not confirm), 2 bad usage
or settings, 3 the engine could not run (log locked, broker unreachable, ...).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from engine.cli.common import EXIT_USAGE, exit_code, leaf, one_line
from engine.cli.logs import setup_logging
from engine.cli.options import (
    global_options,
    json_option,
    no_plots_option,
    run_flags,
    settings_overrides,
)
from engine.cli.run import pace_overrides
from engine.config import Settings, load_settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n")[0])
    global_options(p, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    global_options(common, defaults=False)
    sub = p.add_subparsers(dest="command", metavar="command")

    def command(name: str, helptext: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=helptext, parents=[common])

    runp = command("run", "run the engine (no settings: the demo on sample data)")
    demop = command("demo", "the embedded demo: $200 simulated account, sample data, VWAP")
    for rp in (runp, demop):
        rp.add_argument("--pace", type=float, default=None, metavar="SECONDS",
                        help="wall-clock seconds between replayed bars, to watch it trade")
        rp.add_argument("--dashboard", action="store_true",
                        help="serve the dashboard (dashboard.bind, default 127.0.0.1:8765)")
    c = command("config", "print the effective settings (secrets masked)")
    json_option(c, "(always JSON)")
    b = command("backtest", "replay bars or a log through the engine")
    run_flags(b)
    b.add_argument("--symbols", help="comma-separated symbols to trade")
    no_plots_option(b)
    w = command("sweep", "backtest a grid of strategy parameters in parallel")
    run_flags(w)
    w.add_argument("--grid", action="append", default=[], help="key=v1,v2,... (repeatable)")
    w.add_argument("--processes", type=int, default=None)
    w.add_argument("--ray", action="store_true", help="run on a Ray cluster (pip install .[ray])")
    s = command("status", "trading state, positions, orders, P&L vs limits")
    json_option(s)
    d = command("dashboard", "the operator's dashboard in the browser, on any log")
    d.add_argument("--bind", help="HOST:PORT (default: dashboard.bind, 127.0.0.1:8765)")
    d.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback bind (every request then needs the token)")
    for name, helptext in (("halt", "engage the kill switch"), ("resume", "release it")):
        h = command(name, helptext)
        h.add_argument("--reason", required=True)
        h.add_argument("--actor", default="operator")
        json_option(h)
        h.add_argument("--timeout", type=float, default=60.0)
        if name == "halt":
            h.add_argument("--flatten", action="store_true", help="also close every position")
    return p


# command -> (module, function): a command's module (and what it imports) loads only when
# that command runs, so `--help` and `status` do not pay for the backtest machinery.
COMMANDS = {"run": ("run", "cmd_run"), "demo": ("run", "cmd_run"),
            "config": ("status", "cmd_config"), "status": ("status", "cmd_status"),
            "halt": ("status", "cmd_halt_resume"), "resume": ("status", "cmd_halt_resume"),
            "backtest": ("backtest", "cmd_backtest"), "sweep": ("backtest", "cmd_sweep"),
            "dashboard": ("dashboard", "cmd_dashboard")}


def command_function(name: str) -> Callable[[argparse.Namespace, Settings], int]:
    module, function = COMMANDS[name]
    f: Callable[[argparse.Namespace, Settings], int] = getattr(
        importlib.import_module(f"engine.cli.{module}"), function)
    return f


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "run"
    settings: Settings | None = None
    try:
        if args.config:
            os.environ["MQD_CONFIG"] = args.config
        overrides = settings_overrides(args)
        if command == "demo":
            # The demo ignores configured brokers/data: it is always the embedded default.
            overrides.update(broker="simulated", data={"source": "sample"})
        overrides.update(pace_overrides(args, overrides))
        settings = load_settings(**overrides)
        setup_logging(settings, args.verbose)
        return command_function(command)(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line; --verbose for the rest
        code = exit_code(e)
        if args.verbose and code != EXIT_USAGE:
            traceback.print_exc()
        print(f"error: {leaf(e) if code == EXIT_USAGE else one_line(e)}", file=sys.stderr)
        return code
