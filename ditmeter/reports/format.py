"""Human formatting of raw counts; the only place numbers become strings."""

from __future__ import annotations

_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float, unit: str = "") -> str:
    """1.678e15 → '1.678 P' + unit; exact below 1000; a negative one (a difference) with the
    minus sign ``seconds`` and ``diff``'s bytes write: ``−1.678 P``."""
    if value < 0:
        return "−" + si(-value, unit)
    for scale, prefix in _SI:
        if abs(value) >= scale:
            return f"{value / scale:.3f} {prefix}{unit}"
    if float(value).is_integer():
        return f"{int(value)} {unit}".rstrip()
    return f"{value:.3f} {unit}".rstrip()


def binary_bytes(value: int) -> str:
    """Bytes in GiB/MiB/KiB."""
    for scale, name in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if value >= scale:
            return f"{value / scale:.2f} {name}"
    return f"{value} B"


def grouped(value: int) -> str:
    """12345678 → '12,345,678' (exact integers in tables)."""
    return f"{value:,}"


def percent(part: int | float, whole: int | float) -> str:
    """Share as a percentage; '-' when the whole is zero (never NaN). One decimal, or two
    significant digits below 0.1% (``0.0021%``, never a misleading ``0.0%``)."""
    if not whole:
        return "-"
    value = 100.0 * part / whole
    if value and abs(value) < 0.1:
        return f"{value:.2g}%"
    return f"{value:.1f}%"


def seconds(s: float) -> str:
    """A duration for people: ``3.2 ms``, ``4.56 s``, ``1,234.5 s (20.6 min)``; a negative one (a
    difference) signed on every part: ``−880.7 s (−14.7 min)``."""
    if s < 0:
        return "−" + seconds(-s).replace("(", "(−")
    if s >= 60:
        return f"{s:,.1f} s ({s / 60:.1f} min)"
    return f"{s:.3g} s" if s >= 1e-3 else f"{s * 1e3:.3g} ms"


def batch_note(n: int) -> str:
    """What a 'video' is when one pipeline call makes ``n`` (``workload.batch_size``)."""
    return f"workload.batch_size={n}: 'per video' is one pipeline call, which makes {n} videos"
