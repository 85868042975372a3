"""What every command shares: the one usage error, the exit codes and the one map from
exceptions to them, and times and parameters from flags. (The one table printer is
`replay.backtest.display.table`: the reports print tables too.)"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from engine.config import SettingsError
from engine.marketdata.types import DataFileError
from engine.strategies.base import StrategyConfigError

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3


class UsageError(Exception):
    """Bad arguments: one line for the user, exit 2."""


def exit_code(e: BaseException, *, reading_a_log: bool = False) -> int:
    """The one map from an exception to an exit code: 1 the command ran but its check failed
    (an id not in the log; for a log reader also a damaged log or report), 2 bad usage or
    settings, 3 the engine could not run. A log reader was given the log as its argument,
    so a file that is not a usable log is a usage error there, not the engine failing."""
    from events.errors import CorruptLogError, DecodeError, LogError
    from events.times import TimeFormatError
    from replay.backtest.plots import PlotsUnavailableError
    from replay.backtest.report import ReportError
    from replay.forensics.queries import ForensicsError, NotFoundError

    e = leaf(e)
    if isinstance(e, NotFoundError):
        return EXIT_CHECK_FAILED
    if isinstance(e, (UsageError, SettingsError, StrategyConfigError, DataFileError,
                      ForensicsError, TimeFormatError)):
        return EXIT_USAGE
    if reading_a_log:
        if isinstance(e, (ReportError, PlotsUnavailableError, CorruptLogError, DecodeError)):
            return EXIT_CHECK_FAILED
        if isinstance(e, LogError):
            return EXIT_USAGE
    return EXIT_RUNTIME


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise UsageError(f"--param {p!r}: use key=value")
        k, v = p.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def leaf(e: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups from task groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return e


def one_line(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup) and e.exceptions:
        return one_line(e.exceptions[0])
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
