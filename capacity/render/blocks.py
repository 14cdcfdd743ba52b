"""The report's block model and its two emitters, Markdown and HTML.

A document is a list of blocks (headings, paragraphs, bullets, tables, code, the plot). Text
is either ours (``str``: fixed wording and numbers) or the host's (``Host``: process names,
command lines, paths, versions); each emitter escapes the host's in one place, so the two
formats cannot drift apart."""

from __future__ import annotations

import dataclasses
import html
import urllib.parse
from collections.abc import Sequence
from typing import Literal

from capacity.render.escape import html_escape, markdown_inline_escape


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    """Text read from the measured host: escaped by every emitter."""

    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Strong:
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Code:
    """A short generated snippet (a directive), shown in a monospace font."""

    text: str


Span = str | Host | Strong | Code


Cell = Span | tuple[Span, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Heading:
    level: int
    spans: tuple[Span, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Para:
    spans: tuple[Span, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Bullets:
    items: tuple[tuple[Span, ...], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    align: tuple[Literal["left", "right"], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class CodeBlock:
    """Generated configuration lines; never host text."""

    lines: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Figure:
    """The plot: a PNG file next to the Markdown, an inline SVG, or why there is none."""

    png_name: str | None = None
    svg: str | None = None
    missing: tuple[Span, ...] = ()


Block = Heading | Para | Bullets | Table | CodeBlock | Figure


def _md_span(span: Span) -> str:
    if isinstance(span, Host):
        # Host text is never the first thing on a line here (headings, paragraphs, bullets
        # and cells all start with our own text or markup), so inline escaping is enough.
        return markdown_inline_escape(span.text)
    if isinstance(span, Strong):
        return f"**{span.text}**"
    if isinstance(span, Code):
        return f"`{span.text}`"
    return span


def _md_cell(cell: Cell) -> str:
    spans = cell if isinstance(cell, tuple) else (cell,)
    # Our own text never holds a pipe; host text has it escaped already.
    return "".join(_md_span(s) for s in spans).replace(" | ", " \\| ") or " "


def to_markdown(blocks: Sequence[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + "".join(_md_span(s) for s in block.spans))
        elif isinstance(block, Para):
            out.append("".join(_md_span(s) for s in block.spans))
        elif isinstance(block, Bullets):
            out.append("\n".join("* " + "".join(_md_span(s) for s in item) for item in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(h or " " for h in block.headers) + " |"]
            lines.append(
                "|" + "|".join("---:" if a == "right" else ":---" for a in block.align) + "|"
            )
            for row in block.rows:
                lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            out.append("\n".join(lines))
        elif isinstance(block, CodeBlock):
            out.append("```\n" + "\n".join(block.lines) + "\n```")
        elif isinstance(block, Figure):
            if block.png_name is not None:
                target = urllib.parse.quote(block.png_name)
                out.append(
                    f"![Memory against worker count: measured points, fit, 95% prediction "
                    f"bounds and the budget]({target})"
                )
            else:
                out.append("".join(_md_span(s) for s in block.missing))
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem;
       border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; vertical-align: top; }
th { background: #f4f4f4; } td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; }
.figure svg { max-width: 100%; height: auto; } .note { font-style: italic; }
"""


def _html_span(span: Span) -> str:
    if isinstance(span, Host):
        return html_escape(span.text)
    if isinstance(span, Strong):
        return f"<strong>{html.escape(span.text)}</strong>"
    if isinstance(span, Code):
        return f"<code>{html.escape(span.text)}</code>"
    return html.escape(span)


def _html_cell(cell: Cell) -> str:
    spans = cell if isinstance(cell, tuple) else (cell,)
    return "".join(_html_span(s) for s in spans)


def to_html(blocks: Sequence[Block], title: str) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html_escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            tag = f"h{block.level}"
            out.append(f"<{tag}>" + "".join(_html_span(s) for s in block.spans) + f"</{tag}>")
        elif isinstance(block, Para):
            out.append("<p>" + "".join(_html_span(s) for s in block.spans) + "</p>")
        elif isinstance(block, Bullets):
            items = "".join(
                "<li>" + "".join(_html_span(s) for s in item) + "</li>" for item in block.items
            )
            out.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            cls = ['class="r"' if a == "right" else "" for a in block.align]
            head = "".join(
                f"<th {c}>{html.escape(h)}</th>" for h, c in zip(block.headers, cls, strict=False)
            )
            body = "".join(
                "<tr>"
                + "".join(
                    f"<td {c}>{_html_cell(cell)}</td>" for cell, c in zip(row, cls, strict=False)
                )
                + "</tr>"
                for row in block.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, CodeBlock):
            out.append("<pre><code>" + html.escape("\n".join(block.lines)) + "</code></pre>")
        elif isinstance(block, Figure):
            if block.svg is not None:
                # matplotlib's SVG, drawn from numbers only: no host text inside.
                out.append(f'<div class="figure">{block.svg}</div>')
            else:
                out.append(
                    '<p class="note">' + "".join(_html_span(s) for s in block.missing) + "</p>"
                )
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
