"""Projections from a log on disk: replay (`rebuild`), snapshot files, and the two together
(`rebuild_from_path`, what a restart does).

The folds themselves are `projections.state.Projections` (pure, no I/O); this module is the
I/O around them: rows come through `events.store.LogReader`, snapshots are files next to the
log, tagged with the log's hash at their seq so one is never applied to a different log.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from events.codec import Codec, default_codec
from events.store import REPLAY_COLUMNS, LogReader
from projections.state import SNAPSHOT_VERSION, Projections, Snapshot, replay_decoders


async def rebuild(
    reader: LogReader,
    *,
    to_seq: int | None = None,
    at: datetime | None = None,
    start: Projections | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Projections:
    """Fold the log (optionally onto a snapshot's state, from its seq on) up to `to_seq` or
    up to the last event recorded at or before `at`.

    Replay decodes only what the projections read (a bar's symbol, times and close; nothing of
    an event type no projection folds); a row that fails that decode raises with its seq.
    `LogReader.verify()` is the full check: it decodes and validates every field of every row.
    """
    proj = start if start is not None else Projections()
    codec = reader.codec
    fast = replay_decoders(codec, proj)
    versions = codec.versions
    decode = codec.decode
    apply = proj.apply
    if at is not None:
        # "As of a time" is the prefix up to the last row recorded at or before it.
        at_seq = await reader.seq_at(at)
        to_seq = at_seq if to_seq is None else min(to_seq, at_seq)
        if to_seq <= proj.last_seq:
            return proj
    missing: Any = object()
    rows = reader.rows(proj.last_seq + 1, to_seq, batch_size=20_000, columns=REPLAY_COLUMNS)
    async with contextlib.aclosing(rows) as batches:
        async for batch in batches:
            for seq, tag, v, payload in batch:
                f = fast.get(tag, missing)
                if f is None or versions.get(tag) != v:
                    if f is None and versions.get(tag) == v:
                        continue  # no projection reads this type
                    apply(seq, decode(tag, v, payload, seq))  # raises naming the seq
                elif f is missing:
                    apply(seq, decode(tag, v, payload, seq))
                else:
                    try:
                        event = f(payload)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        event = decode(tag, v, payload, seq)  # raises with the seq named
                    apply(seq, event)
            proj.last_seq = batch[-1][0]
            if on_progress is not None:
                on_progress(proj.last_seq)
    return proj


# --- snapshot files ------------------------------------------------------------------------

_snap_encoder = msgspec.msgpack.Encoder()
_snap_decoder = msgspec.msgpack.Decoder(Snapshot)


def snapshot_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".snapshot")


def encode_snapshot(proj: Projections, row_hash: bytes) -> bytes:
    """The state as of `proj.last_seq`, tagged with the log's hash at that seq so a snapshot
    can never be applied to a different log. Call it where nothing folds concurrently."""
    return row_hash + _snap_encoder.encode(proj.to_snapshot())


def write_snapshot(log_path: Path, data: bytes) -> Path:
    """Write an encoded snapshot next to the log, atomically (blocking: use a thread)."""
    path = snapshot_path(log_path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def save_snapshot(proj: Projections, log_path: Path, row_hash: bytes) -> Path:
    return write_snapshot(log_path, encode_snapshot(proj, row_hash))


async def load_snapshot(reader: LogReader) -> Projections | None:
    """The saved state, if there is one that matches this log; otherwise None (replay all)."""
    path = snapshot_path(reader.path)
    if not path.exists():
        return None
    data = path.read_bytes()
    try:
        snap = _snap_decoder.decode(data[32:])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if snap.version != SNAPSHOT_VERSION:
        return None
    if await reader.hash_at(snap.last_seq) != data[:32]:
        return None
    return Projections.from_snapshot(snap)


async def rebuild_from_path(path: str | os.PathLike[str], *, use_snapshot: bool = True,
                            codec: Codec | None = None) -> Projections:
    async with LogReader(path, codec or default_codec()) as reader:
        start = await load_snapshot(reader) if use_snapshot else None
        return await rebuild(reader, start=start)

