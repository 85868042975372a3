"""The base of every event: a frozen, tagged msgspec struct stamped with a tz-aware UTC time.

Every timestamp in an event must be timezone-aware; a naive one is refused at construction
(and at decode) because a naive time in a trading log is a bug waiting for a DST change.
Aware times in another zone are normalised to UTC so the log has one representation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

import msgspec

__all__ = ["UTC", "Event", "NaiveDatetimeError", "check_datetimes", "require_utc", "tag_of"]


class NaiveDatetimeError(ValueError):
    """A timestamp without a time zone reached an event or contract."""


def require_utc(value: datetime, field: str, owner: str) -> datetime:
    """Return `value` as an aware UTC datetime, refusing naive ones with a clear message."""
    tz = value.tzinfo
    if tz is None or tz.utcoffset(value) is None:
        raise NaiveDatetimeError(
            f"{owner}.{field} must be timezone-aware UTC, got naive datetime {value.isoformat()}"
        )
    if tz is UTC:
        return value
    return value.astimezone(UTC)


def _datetime_fields(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    out = []
    for f in msgspec.structs.fields(cls):
        t = f.type
        if t is datetime or (getattr(t, "__args__", None) and datetime in t.__args__):
            out.append(f.name)
    return tuple(out)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", omit_defaults=False):
    """Base class of every fact in the log.

    `ts` is the engine's clock time when the fact was recorded (from the injected clock, never
    the wall clock directly). Subclasses set `SCHEMA_VERSION`; bump it only together with an
    upcaster in `events.codec` so older rows keep decoding.
    """

    SCHEMA_VERSION: ClassVar[int] = 1

    ts: datetime

    def __post_init__(self) -> None:
        # Nearly every event's only datetime is `ts`, already UTC (the injected clock's):
        # that is settled by one test here, without the general walk over its fields.
        ts = self.ts
        if ts is not None and ts.tzinfo is UTC and type(self) in _TS_ONLY:
            return
        check_datetimes(self)


_DT_CACHE: dict[type, tuple[str, ...]] = {}
# Types whose only datetime field is `ts` (filled as `check_datetimes` meets them).
_TS_ONLY: set[type] = set()


def check_datetimes(obj: msgspec.Struct) -> None:
    """Refuse naive datetimes in any datetime-typed field of `obj`; normalise aware ones to UTC."""
    cls = type(obj)
    names = _DT_CACHE.get(cls)
    if names is None:
        names = _DT_CACHE[cls] = _datetime_fields(cls)
        if names == ("ts",):
            _TS_ONLY.add(cls)
    for f in names:
        v = getattr(obj, f)
        if v is None:
            continue
        tz = v.tzinfo
        if tz is UTC:
            continue
        msgspec.structs.force_setattr(obj, f, require_utc(v, f, cls.__name__))


def tag_of(cls: type[msgspec.Struct]) -> str:
    """The tag an event type is stored under (its `type` column)."""
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str), cls
    return tag

