"""Renderers for ``capplan check``: a short text summary, JSON and JUnit XML.

Same rules as ``report``: records in, text out, host text escaped with ``report``'s
functions (terminal text stripped of control characters; XML built by ElementTree, which
escapes markup, from text stripped of the control characters XML 1.0 forbids).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tabulate import tabulate

from capacity.answers import Comparison, Verdict
from capacity.codec import dumps
from capacity.render.escape import terminal_safe
from capacity.units import format_bytes, format_in, pick_unit

LABELS = {"per_instance": "per worker", "fixed": "fixed"}
JUNIT_NAMES = {"per_instance": "per_worker_memory", "fixed": "fixed_memory"}


# --------------------------------------------------------------------------- check


def tolerance_text(verdict: Verdict) -> str:
    t = verdict.tolerance
    parts = []
    if t.max_increase_ratio is not None:
        parts.append(f"{t.max_increase_ratio * 100:g}%")
    if t.max_increase_bytes is not None:
        parts.append(format_bytes(t.max_increase_bytes))
    return " and ".join(parts)


def _change(item: Comparison) -> str:
    sign = "+" if item.delta_bytes >= 0 else "-"
    ratio = f"{item.delta_ratio:+.2%}" if item.delta_ratio is not None else "n/a"
    return f"{ratio} ({sign}{format_bytes(abs(item.delta_bytes))})"


def _p(item: Comparison) -> str:
    return f"p = {item.p_value:.2g}"


def outcome_text(item: Comparison, tolerance: str) -> str:
    """One phrase per figure, pyperf style: 'Not significant' is said plainly."""
    if item.outcome == "regression":
        return f"REGRESSION: heavier beyond the {tolerance} tolerance, significant ({_p(item)})"
    if item.outcome == "improvement":
        return f"improvement: lighter beyond the {tolerance} tolerance, significant ({_p(item)})"
    if item.outcome == "inconclusive":
        return f"inconclusive: beyond the {tolerance} tolerance but not significant ({_p(item)})"
    if item.outcome == "within_tolerance":
        return f"significant ({_p(item)}) but within the {tolerance} tolerance"
    if item.delta_bytes == 0:
        return "unchanged"
    return f"Not significant ({_p(item)})"


def _headline(verdict: Verdict, tolerance: str) -> str:
    if verdict.status == "not_comparable":
        return "Result: NOT COMPARABLE: " + "; ".join(verdict.not_comparable)
    if verdict.status == "regression":
        worst = [c for c in verdict.comparisons if c.outcome == "regression"]
        return "Result: REGRESSION: " + "; ".join(
            f"{LABELS[c.quantity]} memory rose {_change(c)}, beyond the {tolerance} tolerance"
            for c in worst
        )
    if verdict.status == "inconclusive":
        return "Result: INCONCLUSIVE: a change beyond the tolerance that the spread cannot confirm"
    lighter = [c for c in verdict.comparisons if c.outcome == "improvement"]
    if lighter:
        return "Result: PASS, and lighter: " + "; ".join(
            f"{LABELS[c.quantity]} memory fell {_change(c)}" for c in lighter
        )
    return f"Result: PASS (no regression beyond the {tolerance} tolerance)"


def render_verdict_text(verdict: Verdict) -> str:
    safe = terminal_safe
    tolerance = tolerance_text(verdict)
    b, c = verdict.baseline, verdict.current
    out = [
        f"Baseline: {safe(b.source)}: {safe(b.workload_name)} ({safe(b.selector)}), "
        f"{b.worker_count} workers × {b.samples} samples, measured {safe(b.time)} on {safe(b.hostname)}",
        f"Now:      {safe(c.source)}: {safe(c.workload_name)} ({safe(c.selector)}), "
        f"{c.worker_count} workers × {c.samples} samples",
        "",
    ]
    rows = []
    for item in verdict.comparisons:
        unit = pick_unit([item.baseline_bytes, item.current_bytes])
        rows.append(
            [
                LABELS[item.quantity],
                f"{format_in(item.baseline_bytes, unit)} {unit[0]} ± "
                f"{format_bytes(item.baseline_se_bytes)}",
                f"{format_in(item.current_bytes, unit)} {unit[0]} ± "
                f"{format_bytes(item.current_se_bytes)}",
                _change(item),
                outcome_text(item, tolerance),
            ]
        )
    out.append(
        tabulate(
            rows,
            headers=["", "baseline ± SE", "now ± SE", "change", "verdict"],
            tablefmt="simple",
            disable_numparse=True,
            colalign=("left", "right", "right", "right", "left"),
        )
    )
    allowed = ", ".join(
        f"{LABELS[item.quantity]} {format_bytes(item.allowed_bytes)}"
        for item in verdict.comparisons
    )
    out.append("")
    out.append(
        f"Tolerance: {tolerance} ({allowed}); significance: Welch's t-test, p < {verdict.alpha:g}."
    )
    if verdict.not_comparable and verdict.env_change_allowed:
        out.append("Compared anyway (--allow-env-change): " + "; ".join(verdict.not_comparable))
    for note in verdict.differences:
        out.append(f"Note: {safe(note)}")
    if verdict.status == "not_comparable":
        out.append("The figures above are shown for information only.")
    out.append("")
    out.append(safe(_headline(verdict, tolerance)))
    if verdict.hint:
        out.append(f"Hint: {safe(verdict.hint)}")
    return "\n".join(out) + "\n"


def render_verdict_json(verdict: Verdict) -> str:
    return dumps(verdict)


def render_junit(verdict: Verdict) -> str:
    """JUnit XML: one test case per figure, a failure for a regression, an error otherwise."""
    tolerance = tolerance_text(verdict)

    def clean(text: str) -> str:
        return terminal_safe(text)

    failures = sum(1 for c in verdict.comparisons if c.outcome == "regression")
    errors = (
        len(verdict.comparisons)
        if verdict.status == "not_comparable"
        else sum(1 for c in verdict.comparisons if c.outcome == "inconclusive")
    )
    if verdict.status == "not_comparable":
        failures = 0
    suites = ET.Element(
        "testsuites",
        name="capplan check",
        tests=str(len(verdict.comparisons)),
        failures=str(failures),
        errors=str(errors),
    )
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=clean(f"capplan check {verdict.baseline.source}"),
        tests=str(len(verdict.comparisons)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        hostname=clean(verdict.current.hostname),
        timestamp=clean(verdict.current.time),
    )
    for item in verdict.comparisons:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=clean(f"capplan.check.{verdict.baseline.workload_name}"),
            name=JUNIT_NAMES[item.quantity],
            time="0",
        )
        detail = (
            f"{LABELS[item.quantity]}: baseline {format_bytes(item.baseline_bytes)} ± "
            f"{format_bytes(item.baseline_se_bytes)}, now {format_bytes(item.current_bytes)} ± "
            f"{format_bytes(item.current_se_bytes)}, change {_change(item)}; "
            f"{outcome_text(item, tolerance)}"
        )
        if verdict.status == "not_comparable":
            error = ET.SubElement(
                case,
                "error",
                type="not_comparable",
                message=clean("not comparable: " + "; ".join(verdict.not_comparable)),
            )
            error.text = clean(verdict.hint)
        elif item.outcome == "regression":
            failure = ET.SubElement(case, "failure", type="regression", message=clean(detail))
            failure.text = clean(verdict.hint)
        elif item.outcome == "inconclusive":
            error = ET.SubElement(case, "error", type="inconclusive", message=clean(detail))
            error.text = clean(verdict.hint)
        else:
            out = ET.SubElement(case, "system-out")
            out.text = clean(detail)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, "unicode") + "\n"
