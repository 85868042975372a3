"""Numbers rounded for people (tables, terminals). JSON keeps the exact values."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any


def _num(x: Any) -> Decimal | float | None:
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, (int, float, Decimal)):
        return x
    try:
        return Decimal(str(x))
    except InvalidOperation:
        return None


def money(x: Any) -> str:
    """1234.5 -> '1,234.50'; '0E-9' -> '0.00'; None -> '-'."""
    v = _num(x)
    if v is None:
        return "-"
    return f"{Decimal(str(v)).quantize(Decimal('0.01')) + 0:,}"


def pct(x: Any, digits: int = 2) -> str:
    """A fraction as a percentage: 0.01234 -> '1.23%'."""
    v = _num(x)
    return "-" if v is None else f"{float(v):.{digits}%}"


def number(x: Any, digits: int = 2) -> str:
    v = _num(x)
    return "-" if v is None else f"{float(v):,.{digits}f}"


def qty(x: Any) -> str:
    """Shares without float noise or exponent: Decimal('1.500000000') -> '1.5'."""
    v = _num(x)
    if v is None:
        return "-"
    d = Decimal(str(v)).normalize() + 0
    s = format(d, "f")
    return s if len(s) < 14 else f"{d:.6f}"


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], *,
          right: Collection[int] = ()) -> str:
    """The one fixed-width text table of both command lines and the reports: a header, a rule
    and the rows; columns listed in `right` are right-aligned (numbers)."""
    cells = [[str(h) for h in headers], *([str(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                         for i, c in enumerate(row)).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]),
                      *(line(r) for r in cells[1:])])
