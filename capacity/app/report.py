"""``capplan report`` as one call: a saved model rendered in the format asked for.

The format comes from ``--format`` or else from the output file's suffix; a Markdown
report written to a file gets its plot as a PNG beside it (same name, ``.png``). Writing
is the caller's: this returns what to write where.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from capacity.errors import CapplanError
from capacity.records import Estimate

FORMATS = ("markdown", "html", "openmetrics", "text", "json")
SUFFIX_FORMATS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".prom": "openmetrics",
    ".om": "openmetrics",
    ".txt": "text",
    ".json": "json",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    png: bytes | None = None
    png_path: Path | None = None  # where the PNG goes, beside a Markdown file


def format_for(output: Path | None, fmt: str | None) -> str:
    """``fmt`` when given, else the one ``output``'s suffix names (Markdown on stdout)."""
    if fmt is not None:
        return fmt
    if output is None:
        return "markdown"
    suffix = output.suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise CapplanError(
            f"cannot tell the format from {output}",
            hint="name the file .md, .html or .prom, or pass --format",
        )
    return SUFFIX_FORMATS[suffix]


def render_report(
    estimate: Estimate, fmt: str, *, source: str, output: Path | None = None
) -> Rendered:
    """The report of ``estimate`` (read from ``source``) in ``fmt``, for ``output`` (None:
    stdout, where a Markdown report has nowhere to put its plot)."""
    if fmt in ("markdown", "html"):
        from capacity.render import document

        png_path = output.with_suffix(".png") if fmt == "markdown" and output else None
        text, png = document.render(
            estimate,
            "markdown" if fmt == "markdown" else "html",
            source=source,
            png_name=png_path.name if png_path is not None else None,
        )
        return Rendered(text, png, png_path if png is not None else None)
    from capacity.render import report

    return Rendered(report.RENDERERS[fmt](estimate))
