"""Measurement: reads /proc, /sys and cgroups, starts and stops workloads. Never imports capacity.model.fitting or capacity.render.

Kept free of imports so that ``capplan --help`` stays fast."""
