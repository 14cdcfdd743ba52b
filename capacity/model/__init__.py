"""The model: pure functions from records to records (accounting, fit, drift, estimators, prediction). No I/O; never imports capacity.measure.

Kept free of imports so that ``capplan --help`` stays fast."""
