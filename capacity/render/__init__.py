"""Rendering: text, JSON, OpenMetrics, Markdown and HTML. The only place that escapes host text.

Kept free of imports so that ``capplan --help`` stays fast."""
