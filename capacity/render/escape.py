"""The one place host text is made safe: for a terminal, Markdown, HTML and OpenMetrics labels.

Everything read from the host (process names, command lines, file names) is untrusted. A
terminal gets control characters stripped (a process may name itself with escape
sequences), Markdown and HTML get their metacharacters escaped, and OpenMetrics labels
their quotes and backslashes. Renderers call these; nothing else escapes."""

from __future__ import annotations

import html
import re

# Bidirectional controls: the Arabic letter mark, LRM/RLM, the embeddings and overrides
# (U+202A-U+202E: RLO makes "exe.txt" read "txt.exe") and the isolates (U+2066-U+2069),
# as in CVE-2021-42574 ("Trojan Source"); and the line and paragraph separators.
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
# C0 controls (but not tab/newline, handled by callers), DEL, C1 controls, and _BIDI.
_CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}]")


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~-])")


_LINE_BREAKS = re.compile(r"[\t\n\r\v\f]+")


_MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]|~#$!])")


def terminal_safe(text: str) -> str:
    """Strip control characters (ESC included) and bidirectional controls, so host text
    can neither drive the terminal nor reorder what the reader sees. Markdown, HTML and
    OpenMetrics escaping start from this too."""
    return _CONTROL.sub("", text)


def markdown_escape(text: str) -> str:
    """Escape Markdown metacharacters and HTML so host text renders as literal text."""
    # A line break would end a table row or a paragraph: it becomes a space.
    cleaned = _MARKDOWN_SPECIAL.sub(r"\\\1", terminal_safe(_LINE_BREAKS.sub(" ", text)))
    # Entities, not backslashes, for HTML: a Markdown renderer passes raw HTML through.
    return cleaned.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def markdown_inline_escape(text: str) -> str:
    """Escape host text placed inside a line (a table cell, after a label), never starting one.

    Inside a line only inline syntax can fire: emphasis, code, links, HTML, tables' pipes,
    strikethrough, math and trailing heading marks. Block markers (``-``, ``+``, ``1.``)
    matter only at the start of a line, so they stay as they are and the Markdown source
    stays readable (``2026-11-25``, not ``2026\\-11\\-25``). Use ``markdown_escape`` where the
    text may start a line.
    """
    cleaned = _MARKDOWN_INLINE.sub(r"\\\1", terminal_safe(_LINE_BREAKS.sub(" ", text)))
    return cleaned.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def html_escape(text: str) -> str:
    return html.escape(terminal_safe(text), quote=True)


_CONTROL_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f{_BIDI}]")


def openmetrics_label(text: str) -> str:
    """A label value as the OpenMetrics spec escapes it: ``\\``, ``\"`` and ``\\n``.

    Other control characters are legal there but no dashboard wants them: they go.
    """
    cleaned = _CONTROL_BUT_NEWLINE.sub("", text)
    return cleaned.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
