"""capplan report: Markdown with a PNG, self-contained HTML with inline SVG, OpenMetrics;
the plot's absence handled; and host text that tries to be markup shown as text.

The hostile records are the committed model with names replaced (records are plain
dataclasses). Markdown is checked by rendering it with a real CommonMark parser
(markdown-it-py, which rich already depends on) and reading the resulting HTML's tags.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from capacity import modelfile, records
from capacity.records import Estimate, Notice
from capacity.render import document as report_document
from capacity.render import openmetrics

MODEL = REPO / "models" / "demo.json"
HOSTILE = "<script>alert(1)</script>"
NAMES = [
    HOSTILE,
    "a|b|c",
    "`rm -rf /`",
    "line\nbreak",
    "esc\x1b[31mred",
    "*bold* _it_ [x](javascript:alert(1))",
    "# heading ##",
    "&amp; &lt;b&gt;",
    "~~gone~~ $x$",
]
SECTIONS = [
    "Summary",
    "Memory against worker count",
    "Budget arithmetic",
    "The fit",
    "The usual rules side by side",
    "Where the memory goes",
    "Load and copy-on-write drift",
    "Warnings",
    "Environment",
    "Processes in the last sample",
]


@pytest.fixture(scope="module")
def base() -> Estimate:
    return modelfile.load_estimate(MODEL)


def hostile(estimate: Estimate) -> Estimate:
    def rename(snapshot: records.Snapshot) -> records.Snapshot:
        return dataclasses.replace(
            snapshot,
            processes=tuple(
                dataclasses.replace(p, name=NAMES[i % len(NAMES)])
                for i, p in enumerate(snapshot.processes)
            ),
        )

    return dataclasses.replace(
        estimate,
        samples=tuple(rename(s) for s in estimate.samples),
        workload=dataclasses.replace(
            estimate.workload,
            name=HOSTILE,
            selector=f"--cmd {HOSTILE}",
            parent_cmdline=tuple(NAMES),
            exe="/opt/<b>bold</b>",
        ),
        environment=dataclasses.replace(
            estimate.environment,
            hostname="<img src=x onerror=alert(1)>",
            command_line=("capplan", "estimate", "--cmd", HOSTILE),
            executable_version="v1 | <i>x</i>\x1b]0;title\x07",
        ),
        budget=dataclasses.replace(
            estimate.budget, source="memory limit of cgroup /<script>x</script>"
        ),
        warnings=(Notice(code="TEST", message=HOSTILE, hint=f"run `{HOSTILE}` | now"),),
    )


class Tags(HTMLParser):
    """Every tag, attribute and piece of text an HTML document holds."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.rows: list[list[str]] = []
        self.in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th") and self.rows:
            self.rows[-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self.in_cell = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.in_cell:
            self.rows[-1][-1] += data


def parse_html(text: str) -> Tags:
    parser = Tags()
    parser.feed(text)
    return parser


def markdown_to_html(text: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return str(markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text))


def assert_inert(tags: Tags) -> None:
    """No element or attribute that host text could have smuggled in."""
    assert not {"script", "img", "b", "i", "a", "iframe", "h3"} & set(tags.tags), set(tags.tags)
    assert not [name for name, _ in tags.attributes if name.startswith("on")]
    text = "".join(tags.text)
    assert HOSTILE in text  # shown, as text
    assert "<img src=x onerror=alert(1)>" in text
    assert "\x1b" not in text


# --------------------------------------------------------------------------- documents


def test_markdown_report_with_png_beside_it(tmp_path: Path, base: Estimate) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "reports" / "demo.md"
    target.parent.mkdir()  # capplan creates no directories (issue 11)
    result = run_cli("report", str(MODEL), "-o", str(target))
    assert result.code == 0, result.stderr
    text = target.read_text()
    png = target.with_suffix(".png")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "](demo.png)" in text  # relative, so the pair can move together
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings == SECTIONS
    conservative = base.prediction.max_instances_conservative
    assert f"**Recommended: {conservative:,} workers**" in text
    assert "confidence **high**" in text
    if base.model.method == "exact":
        assert "Exact page counts from the last sample with a page walk" in text
    else:
        assert "Per-mapping detail" in text  # a smaps model has none, and the report says so
    assert "resources:" in text  # the Kubernetes request and limit for the measured workers


def test_html_report_is_one_self_contained_file(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "demo.html"
    result = run_cli("report", str(MODEL), "-o", str(target))
    assert result.code == 0, result.stderr
    text = target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.html"]
    assert "<svg" in text and "<style>" in text
    assert "<script" not in text and "<link" not in text
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)
    tags = parse_html(text)
    headings = [t for t in tags.tags if t == "h2"]
    assert len(headings) == len(SECTIONS)


def test_markdown_to_stdout_says_where_the_plot_goes() -> None:
    result = run_cli("report", str(MODEL))
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("# Capacity report: ")
    assert "-o reports/NAME.md" in result.stdout


BLOCK_MATPLOTLIB = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
        return None

sys.meta_path.insert(0, Block())
from capacity.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("suffix", [".md", ".html"])
def test_without_matplotlib_the_report_says_how_to_get_the_plot(
    tmp_path: Path, suffix: str
) -> None:
    target = tmp_path / f"demo{suffix}"
    completed = subprocess.run(
        [sys.executable, "-c", BLOCK_MATPLOTLIB, "report", str(MODEL), "-o", str(target)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    text = html.unescape(target.read_text())
    assert "pip install 'capplan[report]'" in text
    assert "blocked by the test" in text
    assert "<svg" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no PNG
    for section in SECTIONS:
        assert section in text  # everything else is still there


# --------------------------------------------------------------------------- escaping


def test_hostile_names_are_text_in_markdown(base: Estimate) -> None:
    text, _ = report_document.render(hostile(base), "markdown", source="m.json", png_name=None)
    assert "<script>" not in text and "<img" not in text and "\x1b" not in text
    tags = parse_html(markdown_to_html(text))
    assert_inert(tags)
    rendered = "".join(tags.text)
    for name in NAMES:
        expected = name.replace("\n", " ").replace("\x1b", "")
        assert expected in rendered, expected
    # Pipes in names did not add table cells: every process row has its seven cells.
    process_rows = [r for r in tags.rows if r[0].isdigit() and r[1] in ("parent", "worker")]
    assert len(process_rows) == len(base.samples[-1].processes)
    assert all(len(r) == 7 for r in process_rows)


def test_hostile_names_are_text_in_html(base: Estimate) -> None:
    text, _ = report_document.render(hostile(base), "html", source="m.json", png_name=None)
    tags = parse_html(text)
    assert_inert(tags)
    assert tags.tags.count("script") == 0
    title = text.split("<title>", 1)[1].split("</title>", 1)[0]
    assert title == "Capacity report: &lt;script&gt;alert(1)&lt;/script&gt;"


def test_terminal_text_of_predict_strips_escape_sequences(tmp_path: Path, base: Estimate) -> None:
    path = tmp_path / "h.json"
    modelfile.save_estimate(path, hostile(base))
    result = run_cli("predict", str(path), "--memory", "8G")
    assert result.code == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert HOSTILE in result.stdout  # a terminal shows markup as it is: only controls go


# --------------------------------------------------------------------------- extras


@dataclasses.dataclass(frozen=True, slots=True)
class FakeFuture:
    first_bytes: int
    plateau: bool
    note: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EstimateWithFuture(Estimate):
    future: FakeFuture | None = None


def test_a_record_added_to_the_estimate_later_is_rendered(base: Estimate) -> None:
    """A record a later version adds to the Estimate shows up with no change of its own."""
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    estimate = EstimateWithFuture(
        **fields, future=FakeFuture(first_bytes=1024**2, plateau=True, note=HOSTILE)
    )
    text, _ = report_document.render(estimate, "markdown", source="m.json", png_name=None)
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert "Future" in headings
    assert "| first\\_bytes | 1.00 MiB |" in text
    assert "| plateau | True |" in text
    assert "<script>" not in text


def test_load_and_drift_have_a_section_with_host_text_escaped(base: Estimate) -> None:
    drift = records.Drift(
        unit="worker",
        tracked=4,
        samples=20,
        duration_seconds=9.5,
        first_bytes=3 * 1024**2,
        last_bytes=7 * 1024**2,
        growth_per_minute_bytes=11.6 * 1024**2,
        growth_p_value=2.7e-8,
        growing=True,
        plateau=False,
        note=HOSTILE,
        sample_more_seconds=15.0,
        headroom_bytes=57 * 1024**2,
    )
    run = records.LoadRun(
        command=("ab", "-n", "100", f"http://x/{HOSTILE}"), requests=100, started_at=0.0
    )
    estimate = dataclasses.replace(base, drift=drift, load=(run,))
    for fmt in ("markdown", "html"):
        text, _ = report_document.render(estimate, fmt, source="m.json", png_name=None)
        assert "<script>" not in text
        assert "Load and copy-on-write drift" in text
        assert "3.00 MiB at the first sample" in text
        assert "7.00 MiB at the last" in text
        assert "sample longer, up to" in text
        assert "No plateau" in text
    headings = re.findall(
        r"^## (.+)$",
        report_document.render(estimate, "markdown", source="m", png_name=None)[0],
        flags=re.MULTILINE,
    )
    assert (
        headings.index("Load and copy-on-write drift")
        == headings.index("Where the memory goes") + 1
    )


# --------------------------------------------------------------------------- OpenMetrics


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    parser = pytest.importorskip("prometheus_client.openmetrics.parser")
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in parser.text_string_to_metric_families(text)
    }


def test_openmetrics_report_parses_and_matches_the_model(tmp_path: Path, base: Estimate) -> None:
    target = tmp_path / "capplan.prom"
    result = run_cli("report", str(MODEL), "-o", str(target))
    assert result.code == 0, result.stderr
    parsed = families(target.read_text())
    labels = {"workload": base.workload.name, "host": base.environment.hostname}
    assert parsed["capplan_worker_memory_bytes"] == [(labels, base.model.per_instance_bytes)]
    assert parsed["capplan_fixed_memory_bytes"] == [(labels, base.model.fixed_bytes)]
    assert parsed["capplan_budget_bytes"] == [(labels, base.budget.total_bytes)]
    assert {s["estimate"]: v for s, v in parsed["capplan_max_workers"]} == {
        "point": base.prediction.max_instances,
        "conservative": base.prediction.max_instances_conservative,
    }
    low, high = base.model.per_instance_ci95
    assert parsed["capplan_worker_memory_ci95_lower_bytes"][0][1] == low
    assert parsed["capplan_worker_memory_ci95_upper_bytes"][0][1] == high
    # node_exporter's textfile collector reads the Prometheus text format: the same file
    # must parse there too (UNIT and EOF are comments to it).
    text_parser = pytest.importorskip("prometheus_client.parser")
    names = {f.name for f in text_parser.text_string_to_metric_families(target.read_text())}
    assert "capplan_worker_memory_bytes" in names


def test_openmetrics_label_values_are_escaped(base: Estimate) -> None:
    name = 'we"ird\\name\nwith\x1b[0m escape'
    estimate = dataclasses.replace(base, workload=dataclasses.replace(base.workload, name=name))
    parsed = families(openmetrics.render_openmetrics(estimate))
    label = parsed["capplan_worker_memory_bytes"][0][0]["workload"]
    assert label == 'we"ird\\name\nwith[0m escape'  # escaped and unescaped exactly; ESC gone


def test_estimate_openmetrics_live(tmp_path: Path) -> None:
    saved = tmp_path / "m.json"
    result = run_cli(
        "estimate", "--demo", "--samples", "2", "--interval", "0.2", "--format", "openmetrics",
        "--save", str(saved),
    )  # fmt: skip
    assert result.code == 0, result.stderr
    model = json.loads(saved.read_text())["model"]
    parsed = families(result.stdout)
    assert parsed["capplan_worker_memory_bytes"][0][1] == model["per_instance_bytes"]
    assert parsed["capplan_workers_measured"][0][1] == 4


def test_report_refuses_an_unknown_suffix(tmp_path: Path) -> None:
    result = run_cli("report", str(MODEL), "-o", str(tmp_path / "r.pdf"))
    assert result.code == 2
    assert "cannot tell the format" in result.stderr
