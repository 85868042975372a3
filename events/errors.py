"""Errors raised by the event log and codec. Each names the seq it concerns where there is one."""

from __future__ import annotations


class LogError(Exception):
    """Base class of event-log errors."""


class DecodeError(LogError):
    """A row whose payload cannot be turned back into an event."""

    def __init__(self, seq: int | None, message: str) -> None:
        where = f"seq {seq}: " if seq is not None else ""
        super().__init__(f"{where}{message}")
        self.seq = seq


class SchemaTooNewError(DecodeError):
    """A row (or a whole log) written by a newer MiniQuantDesk than this one."""


class CorruptLogError(LogError):
    """The file is damaged (truncated, not a database, hash chain broken)."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


class LogWriteError(LogError):
    """An append could not be made durable (disk full, I/O error). The log refuses further
    appends until reopened, because later rows would chain onto a row that does not exist."""


class LogClosedError(LogError):
    """Append on a log that is closed or failed."""
