"""One codec for every event: msgpack via msgspec, exact round trips (Decimals as strings,
datetimes as msgpack timestamps), and upcasters so rows written by older schema versions still
decode.

A row is stored as (type tag, schema version, payload). Decoding a row whose version is the
current one is a single msgspec call; an older version goes through the upcaster chain
(`UPCASTERS[(tag, v)]` turns a v payload into v+1) and is then validated as the current type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from events.base import Event, tag_of
from events.catalogue import ALL_EVENT_TYPES
from events.errors import DecodeError, SchemaTooNewError

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _only_fields_added(payload: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2 where v2 only added fields with defaults: the old payload is valid as it is,
    and decoding fills the new fields with their defaults (the meaning v1 logs always had)."""
    return payload


# (tag, from_version) -> function turning a payload of that version into from_version + 1.
# See the rules at the top of events/catalogue.py.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    # Protection (issue 11): order types, classes, legs, stop/trail replace.
    ("intent", 1): _only_fields_added,
    ("risk_approved", 1): _only_fields_added,
    ("order_accepted", 1): _only_fields_added,
    ("replace_requested", 1): _only_fields_added,
    ("order_replaced", 1): _only_fields_added,
    ("orphan_adopted", 1): _only_fields_added,
}


class Codec:
    """Encodes events to payload bytes and decodes rows back, upcasting older versions."""

    def __init__(
        self,
        types: Iterable[type[Event]] = ALL_EVENT_TYPES,
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
    ) -> None:
        self.types: dict[str, type[Event]] = {}
        for t in types:
            tag = tag_of(t)
            if tag in self.types:
                raise ValueError(f"two event types share the tag {tag!r}")
            self.types[tag] = t
        self.versions: dict[str, int] = {tag: t.SCHEMA_VERSION for tag, t in self.types.items()}
        self.upcasters = dict(UPCASTERS if upcasters is None else upcasters)
        self._encoder = msgspec.msgpack.Encoder()
        # `encode(event) -> bytes` is the encoder's own method: every appended row calls it,
        # and a Python wrapper around it would be one more frame per row.
        self.encode: Callable[[Event], bytes] = self._encoder.encode
        # The same bytes, appended to a bytearray (the log's rows keep their payloads so).
        self.encode_into: Callable[[Event, bytearray], None] = self._encoder.encode_into
        self._decoders = {tag: msgspec.msgpack.Decoder(t) for tag, t in self.types.items()}
        self._raw = msgspec.msgpack.Decoder()
        for (tag, v) in self.upcasters:
            if tag in self.versions and v >= self.versions[tag]:
                raise ValueError(f"upcaster for {tag} v{v} but current version is {self.versions[tag]}")

    def tag(self, event: Event) -> str:
        return tag_of(type(event))

    def decode(self, tag: str, version: int, payload: bytes, seq: int | None = None) -> Event:
        """Decode one stored row. Errors name the seq and never return a partial event."""
        current = self.versions.get(tag)
        if current is None:
            raise DecodeError(seq, f"unknown event type {tag!r} (written by a newer version?)")
        if version == current:
            try:
                return self._decoders[tag].decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                raise DecodeError(seq, f"cannot decode {tag} v{version}: {e}") from None
        if version > current:
            raise SchemaTooNewError(
                seq,
                f"{tag} was written with schema v{version}, this build reads up to v{current}; "
                "upgrade MiniQuantDesk to read this log",
            )
        return self._upcast(tag, version, current, payload, seq)

    def _upcast(self, tag: str, version: int, current: int, payload: bytes, seq: int | None) -> Event:
        try:
            data = self._raw.decode(payload)
        except msgspec.DecodeError as e:
            raise DecodeError(seq, f"cannot decode {tag} v{version}: {e}") from None
        if not isinstance(data, dict):
            raise DecodeError(seq, f"{tag} v{version}: payload is not a map")
        for v in range(version, current):
            fn = self.upcasters.get((tag, v))
            if fn is None:
                raise DecodeError(seq, f"no upcaster from {tag} v{v} to v{v + 1}")
            data = fn(data)
        data["type"] = tag
        try:
            return msgspec.convert(data, self.types[tag], strict=False)
        except msgspec.ValidationError as e:
            raise DecodeError(seq, f"upcast {tag} v{version}->v{current} invalid: {e}") from None

    def view_decoder(self, tag: str, view: type[msgspec.Struct]) -> Callable[[bytes], Any]:
        """A decoder that reads only the fields of `view` from rows of `tag` (current version).

        Replay uses these so a bar costs one Decimal instead of seven; the view's fields must
        be a subset of the event's, with the same names and types.
        """
        dec = msgspec.msgpack.Decoder(view)
        return dec.decode


@functools.cache
def default_codec() -> Codec:
    """The codec for this build's catalogue (stateless, so sharing one is safe)."""
    return Codec()
