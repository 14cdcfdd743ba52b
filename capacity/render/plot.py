"""The report's plot: memory against worker count, from a saved model (matplotlib, optional).

Two panels, because the measured workers sit at the far left of the range the prediction
covers: the left one shows the measured points with the fitted line and its band, the right
one extends the line and band to the budget and marks where they cross it (the point and
the conservative maximum).

The band is the one-sided 95 % prediction bound each way (``model.upper_bound`` and
``lower_bound``), so its upper edge crosses the budget exactly at the conservative maximum.

matplotlib is the optional ``report`` extra: it is imported only here and only when a plot
is drawn, and its absence raises ``PlotUnavailable`` so that the report renders the rest.
No text read from the host goes into the figure: nothing in it needs escaping.
"""

from __future__ import annotations

import io
from typing import Any

from capacity.model.fitting import lower_bound, total_for, upper_bound
from capacity.records import Estimate, ModelFit
from capacity.units import pick_unit

INSTALL_HINT = "pip install 'capplan[report]'"


class PlotUnavailable(Exception):
    """matplotlib cannot be imported: the report says how to get the plot."""


def _fit_and_band(axes: Any, model: ModelFit, xs: list[int], factor: int) -> None:
    """The fitted line and its 95 % prediction band over ``xs``, in units of ``factor``."""
    axes.fill_between(
        xs,
        [lower_bound(model, n) / factor for n in xs],
        [upper_bound(model, n) / factor for n in xs],
        color="tab:blue",
        alpha=0.2,
        linewidth=0,
        label="95% prediction bounds",
    )
    axes.plot(xs, [total_for(model, n) / factor for n in xs], color="tab:blue", label="fit")


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise PlotUnavailable(f"matplotlib is not installed ({err})") from None
    return plt


def _figure(estimate: Estimate) -> Any:
    plt = _pyplot()
    model, budget, prediction = estimate.model, estimate.budget, estimate.prediction
    available = budget.available_bytes
    point_max = prediction.max_instances
    conservative = prediction.max_instances_conservative
    unit_name, factor = pick_unit([available, model.fixed_bytes])
    near_unit, near_factor = pick_unit([y for _, y in model.points] or [model.fixed_bytes])

    plt.rcParams["svg.hashsalt"] = "capplan"  # stable element ids: the SVG diffs cleanly
    fig, (near, far) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)

    # Left: the measured range.
    xs_measured = [x for x, _ in model.points]
    top = max(xs_measured, default=1) + 1
    near_x = list(range(top + 1))
    _fit_and_band(near, model, near_x, near_factor)
    near.scatter(
        xs_measured,
        [y / near_factor for _, y in model.points],
        color="black",
        s=14,
        zorder=3,
        label="measured",
    )
    near.set_xlabel("workers")
    near.set_ylabel(f"memory ({near_unit})")
    near.set_title("Measured")
    near.legend(loc="upper left", fontsize="small")

    # Right: out to the budget.
    end = max(int(point_max * 1.15), top, 10)
    step = max(end // 200, 1)
    far_x = list(range(0, end + 1, step))
    _fit_and_band(far, model, far_x, factor)
    far.scatter(xs_measured, [y / factor for _, y in model.points], color="black", s=14, zorder=3)
    far.axhline(available / factor, color="tab:red", linestyle="--", label="budget - reserve")
    far.axvline(point_max, color="tab:green", linestyle=":", label=f"max {point_max:,}")
    if conservative is not None and conservative != point_max:
        far.axvline(
            conservative,
            color="tab:orange",
            linestyle=":",
            label=f"conservative {conservative:,}",
        )
    far.plot([point_max], [total_for(model, point_max) / factor], "o", color="tab:green")
    far.set_xlabel("workers")
    far.set_ylabel(f"memory ({unit_name})")
    far.set_title(f"Extrapolated to the budget: {point_max:,} workers")
    far.set_ylim(bottom=0)
    far.set_xlim(left=0)
    far.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def render_png(estimate: Estimate) -> bytes:
    plt = _pyplot()
    fig = _figure(estimate)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def render_svg(estimate: Estimate) -> str:
    """The figure as an ``<svg>`` element, ready to inline in HTML (no XML prolog)."""
    plt = _pyplot()
    fig = _figure(estimate)
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]
