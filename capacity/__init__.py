"""capplan: how many workers of this program fit in this machine's memory, and how sure are we.

The package is a library first; ``capacity.cli`` is a thin command line over it. Data flows
one way: process records -> snapshots -> samples -> fitted model -> prediction -> report.
"""

__version__ = "0.1.0"
