"""Symbol eligibility from a CSV (symbol, tradable, fractionable, shortable), and the paths of
the sample data shipped in `engine/sample_data/`."""

from __future__ import annotations

import csv
import os
from datetime import datetime
from importlib import resources
from pathlib import Path

from events.catalogue import AssetInfo

from .types import DataFileError

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def sample_data_dir() -> Path:
    return Path(str(resources.files("engine"))) / "sample_data"


def sample_bars_path() -> Path:
    """The shipped synthetic minute bars (see engine/sample_data/README.md)."""
    return sample_data_dir() / "bars.csv"


def sample_assets_path() -> Path:
    return sample_data_dir() / "assets.csv"


def _flag(value: str, column: str, line: int, path: Path) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise DataFileError(f"{path} line {line}: {column}={value!r} is not true/false")


def read_assets_csv(path: str | os.PathLike[str], ts: datetime) -> list[AssetInfo]:
    """`AssetInfo` events (stamped `ts`) for every row; blocking, the file is small."""
    p = Path(path)
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"symbol", "tradable", "fractionable"}
        have = {n.strip().lower() for n in reader.fieldnames or ()}
        if not need <= have:
            raise DataFileError(f"{p}: needs columns symbol, tradable, fractionable "
                                f"[, shortable]; got {sorted(have)}")
        out = []
        for row in reader:
            row = {k.strip().lower(): (v or "") for k, v in row.items() if k}
            line = reader.line_num
            out.append(AssetInfo(
                ts=ts, symbol=row["symbol"].strip(),
                tradable=_flag(row["tradable"], "tradable", line, p),
                fractionable=_flag(row["fractionable"], "fractionable", line, p),
                shortable=_flag(row.get("shortable") or "false", "shortable", line, p)))
    return out
