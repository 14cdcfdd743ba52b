"""Sizes at the edges: parse what people type, format what people read.

Inside capplan every size is an ``int`` of bytes. This module is the only place that knows
about units. Every suffix is a power of 1024 (``16G`` = ``16GiB`` = 17179869184 bytes), as
in ``free -h``, Apache's and PHP's directives and most sizing conversations; Kubernetes'
decimal ``G`` is the exception we do not follow, and README says so.
"""

from __future__ import annotations

import fractions
import math
import re
from collections.abc import Iterable

from capacity.errors import CapplanError

UNITS: tuple[tuple[str, int], ...] = (
    ("B", 1),
    ("KiB", 1024),
    ("MiB", 1024**2),
    ("GiB", 1024**3),
    ("TiB", 1024**4),
)

_FACTORS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


class SizeError(CapplanError):
    """A size or percentage the user typed could not be understood."""


def parse_size(text: str) -> int:
    """``'512M'`` -> 536870912. Accepts bytes, K/M/G/T with optional ``B`` or ``iB``."""
    match = _SIZE_RE.match(text)
    if not match:
        raise SizeError(
            f"bad size {text!r}", hint="write a number with an optional unit: 512M, 16G, 16GiB"
        )
    number, suffix = match.groups()
    factor = _FACTORS.get(suffix.lower())
    if factor is None:
        raise SizeError(
            f"bad size {text!r}: unknown unit {suffix!r}",
            hint="units are B, K, M, G, T (powers of 1024), e.g. 16G",
        )
    # Exact arithmetic: through a float, 2**63-1 bytes would read as 2**63.
    try:
        value = fractions.Fraction(number) * factor
    except (ValueError, ZeroDivisionError):
        raise SizeError(f"bad size {text!r}") from None
    if value >= 2**63:
        raise SizeError(f"bad size {text!r}: too large")
    return round(value)


def parse_percent(text: str) -> float:
    """``'5%'`` -> 0.05. The ``%`` sign is required so that a bare number is not ambiguous."""
    stripped = text.strip()
    if not stripped.endswith("%"):
        raise SizeError(f"bad percentage {text!r}", hint="write it with a % sign, e.g. 5%")
    try:
        value = float(stripped[:-1])
    except ValueError:
        raise SizeError(f"bad percentage {text!r}", hint="write it like 5% or 12.5%") from None
    if not math.isfinite(value) or value < 0:
        raise SizeError(f"bad percentage {text!r}: must be 0% or more")
    return value / 100.0


def parse_size_or_percent(text: str) -> tuple[int | None, float | None]:
    """A reserve: either a size (``2G``) or a share of the budget (``10%``)."""
    if text.strip().endswith("%"):
        fraction = parse_percent(text)
        if fraction >= 1.0:
            raise SizeError(f"bad reserve {text!r}: a reserve must be below 100%")
        return None, fraction
    return parse_size(text), None


def parse_size_list(text: str) -> list[int]:
    """``'8G,16G,32G'`` -> a list of sizes; empty items are an error."""
    parts = list(text.split(","))
    if any(not part.strip() for part in parts):
        raise SizeError(f"bad size list {text!r}", hint="separate sizes with commas: 8G,16G,32G")
    return [parse_size(part) for part in parts]


def pick_unit(values: Iterable[float]) -> tuple[str, int]:
    """The one unit to show a group of values in, chosen from their typical magnitude.

    A column of figures reads at a glance only when every row uses the same unit (pyperf's
    ``format_timedeltas``, hyperfine's ``format_duration_unit``). We pick the largest unit in
    which the median absolute value is at least 1.
    """
    magnitudes = sorted(abs(v) for v in values if v is not None and math.isfinite(v))
    if not magnitudes:
        return UNITS[0]
    typical = magnitudes[len(magnitudes) // 2]
    chosen = UNITS[0]
    for name, factor in UNITS:
        if typical >= factor:
            chosen = (name, factor)
    return chosen


def format_in(value: float, unit: tuple[str, int], digits: int | None = None) -> str:
    """Format ``value`` bytes in the given unit, without the unit name."""
    name, factor = unit
    scaled = value / factor
    if digits is None:
        digits = 0 if name == "B" else (1 if abs(scaled) >= 100 else 2 if abs(scaled) < 10 else 1)
    return f"{scaled:,.{digits}f}"


def format_bytes(value: float, unit: tuple[str, int] | None = None) -> str:
    """``format_bytes(448000)`` -> ``'437.5 KiB'``."""
    chosen = unit or pick_unit([value])
    return f"{format_in(value, chosen)} {chosen[0]}"


def kubernetes_quantity(value: int) -> str:
    """Bytes as a Kubernetes memory quantity in ``Mi`` (2**20), rounded up.

    Kubernetes reads ``M`` and ``G`` as powers of 1000; ``Mi`` is the binary unit capplan
    uses everywhere, so the figure means what it says.
    """
    return f"{max(math.ceil(value / 1024**2), 1)}Mi"


def format_interval(low: float, high: float) -> str:
    """``'17,628 … 17,636 KiB'``: one unit, with enough digits that the two ends differ.

    A narrow interval printed at the usual three significant figures reads
    ``17.2 … 17.2 MiB`` and says nothing; we add digits (up to three decimals), then step
    down a unit, until the ends can be told apart.
    """
    unit = pick_unit([max(abs(low), abs(high))])
    index = UNITS.index(unit)
    while True:
        for digits in (None, 1, 2, 3):
            first, second = format_in(low, unit, digits), format_in(high, unit, digits)
            if first != second or low == high:
                return f"{first} … {second} {unit[0]}"
        if index == 0:
            return f"{first} … {second} {unit[0]}"
        index -= 1
        unit = UNITS[index]
