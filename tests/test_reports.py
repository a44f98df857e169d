"""Report files: JSON schemas, Markdown, HTML (parsed, escaped, self-contained), badge, CLI."""

import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import html5lib
import pytest
from conftest import Cli, clean_env
from test_analytics import START, add_run, make_settings, rising_history, window

from testviper.analytics import analyse
from testviper.config import load
from testviper.reports import writer
from testviper.reports.badge import badge_svg, colour_for
from testviper.reports.render import html, markdown
from testviper.reports.writer import write_reports

SECRET = "sk-live-REPORTS-5f4e3d2c1b"
RP_CONFIG = """
reportportal:
  instances:
    - {name: local, endpoint: "http://127.0.0.1:9", project: demo, api_key_env: MY_RP_KEY}
"""
HOSTILE_ID = "tests/t.py::test_x[<script>alert('x')</script>\"q\"-ünï☃]"
HOSTILE_MSG = (
    "AssertionError: \"quoted\" & 'single' <img src=x onerror=alert(1)> ünïcødé ☃ \U0001d518"
)
SVG = "{http://www.w3.org/2000/svg}"

REPORT_KEYS = {
    "tv_coverage_analytics_report": {
        "schema_version",
        "metadata",
        "summary",
        "trends",
        "insights",
        "recommendations",
    },
    "tv_threshold_report": {
        "schema_version",
        "metadata",
        "run_id",
        "overall_result",
        "overall_coverage",
        "overall_threshold",
        "overall_meets_threshold",
        "overall_message",
        "components",
        "summary",
        "timestamp",
    },
    "tv_regression_report": {
        "schema_version",
        "metadata",
        "detection_date",
        "days_analyzed",
        "runs_analyzed",
        "components_analyzed",
        "regressions",
        "summary",
        "component_trends",
        "current_coverage",
        "new_failures",
        "new_failures_note",
    },
    "tv_analytics_report": {
        "schema_version",
        "report_info",
        "delivery_status",
        "key_insights",
        "latest_run_summary",
        "runs",
        "coverage",
        "pass_rate",
        "tests_total",
        "run_durations",
        "slowest_tests",
        "flaky_tests",
        "slower_tests",
        "failures",
        "profiles",
        "top_concerns",
        "recommendations",
    },
}
METADATA_KEYS = {
    "generated_at",
    "project",
    "branch",
    "window",
    "data_state",
    "data_note",
    "latest_run_id",
}


@pytest.fixture(autouse=True)
def _no_host_rp(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RP_ENDPOINT", "RP_PROJECT", "RP_API_KEY", "TV_COMPONENT_NAME"):
        monkeypatch.delenv(name, raising=False)


def hostile_history(root: Path) -> object:
    """Twenty days of rising coverage, then a run with a hostile, secret-laden failure."""
    s = make_settings(root, RP_CONFIG)
    rising_history(s, days=20)
    add_run(
        s,
        START + timedelta(days=19, hours=6),
        cov=68,
        components={"xradio": 60, "astroviper": 63},
        tests={
            "t.py::a": "passed",
            HOSTILE_ID: (
                "failed",
                0.7,
                f"{HOSTILE_MSG} key={SECRET} at {Path.home()}/work/x.py and {root}/src/y.py",
                f"captured log: Authorization: Bearer {SECRET}\nsecret={SECRET}",
            ),
        },
    )
    return s


def parse_html(text: str) -> ET.Element:
    """Strict HTML5 parse: any parse error raises."""
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(text)


# --- JSON ---------------------------------------------------------------------------------


def test_json_reports_have_documented_keys_and_schema_version(tmp_path: Path) -> None:
    s = hostile_history(tmp_path / "p")
    a = analyse(s, window())
    out = write_reports(s, a, tmp_path / "out", "json")
    assert len(out.files) == 4
    for path in out.files:
        stem = path.name.rsplit("_", 1)[0]
        assert path.name == f"{stem}_{a.latest.id}.json"
        data = json.loads(path.read_text())
        assert set(data) == REPORT_KEYS[stem], stem
        assert data["schema_version"] == 1
        meta = data.get("metadata", data.get("report_info"))
        assert set(meta) >= METADATA_KEYS
        assert meta["data_state"] == "ok"
    regression = json.loads(
        (tmp_path / "out" / f"tv_regression_report_{a.latest.id}.json").read_text()
    )
    immediate = {r["component"]: r for r in regression["regressions"] if r["type"] == "immediate"}
    assert set(immediate) == {"overall", "xradio"}  # 69.x -> 68 and 83.8 -> 60
    assert immediate["xradio"]["severity"] == "major"
    assert immediate["xradio"]["coverage_drop"] == pytest.approx(23.8)
    assert regression["component_trends"]["overall"]["has_trend"] is True
    assert regression["new_failures"] == [HOSTILE_ID]


def test_empty_history_reports_say_so(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    a = analyse(s, window())
    out = write_reports(s, a, tmp_path / "out")
    names = sorted(p.name for p in out.files)
    assert len(names) == 7
    assert all(re.search(r"_\d{8}T\d{12}Z\.", n) for n in names if n.startswith("tv_"))
    for path in out.files:
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
            meta = data.get("metadata", data.get("report_info"))
            assert meta["data_state"] == "no_data"
            assert "no runs in history" in meta["data_note"]
        elif path.suffix == ".svg":
            assert "no data" in text and "#9f9f9f" in text
        else:
            assert "no runs in history for last 30 days" in text
    threshold = json.loads(next(p for p in out.files if "threshold" in p.name).read_text())
    assert threshold["overall_result"] == "NO_DATA" and threshold["overall_coverage"] is None


def test_one_run_reports_insufficient_data(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p")
    add_run(s, START, cov=75, tests={"t.py::a": "passed"})
    a = analyse(s, window(end_day=1))
    md = markdown(a)
    assert "insufficient data: one run in the window" in md
    assert "insufficient data: 1 point(s) of coverage" in md
    page = html(a)
    parse_html(page)
    assert 'data-state="insufficient_data"' in page


# --- HTML -------------------------------------------------------------------------------


def test_html_parses_is_self_contained_and_escapes(tmp_path: Path) -> None:
    s = hostile_history(tmp_path / "p")
    a = analyse(s, window())
    page = html(a)
    tree = parse_html(page)
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<img" not in page
    for element in tree.iter():  # no element loads or runs anything
        assert not [k for k in element.attrib if k.startswith("on") or k in ("src", "href")]
    assert tree.findall(".//script") == [] and tree.findall(".//img") == []
    assert tree.find(".//meta[@name='viewport']") is not None
    assert "@media print" in page and "@media (max-width: 600px)" in page
    # Hostile name and message arrive as text, intact (unicode included).
    texts = "".join(tree.itertext())
    assert HOSTILE_ID in texts
    assert HOSTILE_MSG in texts
    new = tree.find(".//table[@id='new-failures']")
    assert new is not None and HOSTILE_ID in "".join(new.itertext())
    # Charts: inline SVG polylines, one per plotted series.
    svgs = tree.findall(f".//{SVG}svg")
    assert len(svgs) == 3
    coverage_lines = svgs[0].findall(f"{SVG}polyline")
    assert len(coverage_lines) == 3  # overall + two components
    assert all(len(p.get("points").split()) == 21 for p in coverage_lines)
    rows = tree.findall(".//section[@id='components']//tbody/tr")
    assert ["".join(r.find("td").itertext()) for r in rows] == ["overall", "astroviper", "xradio"]
    status = {"".join(r.find("td").itertext()): r.findall("td")[-1].get("class") for r in rows}
    assert status == {"overall": "s-pass", "astroviper": "s-warn", "xradio": "s-fail"}


def test_markdown_escapes_names(tmp_path: Path) -> None:
    s = hostile_history(tmp_path / "p")
    md = markdown(analyse(s, window()))
    assert "<script>" not in md and "<img" not in md
    assert "&lt;script&gt;" in md
    for line in md.splitlines():
        if line.startswith("| `tests/t.py"):
            assert line.count(" | ") == 3  # no stray pipe splits the row


# --- secrets and paths ----------------------------------------------------------------------


def test_no_secret_or_home_path_in_any_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_RP_KEY", SECRET)
    root = tmp_path / "p"
    s = hostile_history(root)
    s = load(str(root / "testviper.yaml"), check_paths=False)  # reads MY_RP_KEY
    out = write_reports(s, analyse(s, window()), tmp_path / "out")
    assert len(out.files) == 7
    home = str(Path.home())
    for path in out.files:
        text = path.read_text()
        assert SECRET not in text, path.name
        assert "captured log" not in text, path.name
        assert str(root) not in text, path.name
        if home not in ("/", ""):
            assert home + "/" not in text, path.name
    md = next(p for p in out.files if p.suffix == ".md").read_text()
    assert "key=***" not in md  # failure messages are not in the digest
    page = next(p for p in out.files if p.suffix == ".html").read_text()
    assert "key=***" in page and "~/work/x.py" in page and " src/y.py" in page


# --- badge --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "colour"),
    [(55.0, "#e05d44"), (72.5, "#fe7d37"), (80.0, "#dfb317"), (93.0, "#97ca00")],
)
def test_badge_colour_bands(percent: float, colour: str) -> None:
    bands = {"red": 0, "orange": 60, "yellow": 75, "green": 90}
    svg = badge_svg(percent, bands)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    fills = [r.get("fill") for r in root.iter(f"{SVG}rect")]
    assert colour in fills
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts == ["coverage", f"{percent:.1f}%"]
    assert root.get("aria-label") == f"coverage: {percent:.1f}%"


def test_badge_bands_from_config(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "p", 'reports:\n  badge_bands: {red: 0, "#123456": 50}\n')
    assert colour_for(49.9, s.config.reports.badge_bands) == "#e05d44"
    assert colour_for(50.0, s.config.reports.badge_bands) == "#123456"
    assert colour_for(None, s.config.reports.badge_bands) == "#9f9f9f"
    (tmp_path / "p" / "testviper.yaml").write_text("reports:\n  badge_bands: {purple: 0}\n")
    from testviper.errors import UserError

    with pytest.raises(UserError, match=r"reports\.badge_bands"):
        load(str(tmp_path / "p" / "testviper.yaml"), check_paths=False)


# --- writing: atomic, never colliding -----------------------------------------------------


def test_every_file_is_written_atomically_and_names_never_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = make_settings(tmp_path / "p")
    rising_history(s, days=3)
    a = analyse(s, window(end_day=3))
    through: list[str] = []
    real = writer.atomic_write

    def spy(path: Path, data: str | bytes, mode: int | None = None) -> None:
        through.append(Path(path).name)
        real(path, data, mode)

    monkeypatch.setattr(writer, "atomic_write", spy)
    out_dir = tmp_path / "out"
    first = write_reports(s, a, out_dir)
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    second = write_reports(s, a, out_dir)
    names = sorted(p.name for p in out_dir.iterdir())
    assert sorted(through) == sorted(p.name for p in first.files + second.files)
    assert len(names) == 13  # 2 x 6 tagged files + one badge
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]
    for name, data in before.items():
        if name != "coverage-badge.svg":
            assert (out_dir / name).read_bytes() == data  # never overwritten
    tags = {
        p.name.split("_report_")[-1].rsplit(".", 1)[0] for p in second.files if "_report_" in p.name
    }
    assert len(tags) == 1
    assert re.fullmatch(rf"{a.latest.id}_\d{{8}}T\d{{12}}Z", tags.pop())


def seed_recent(root: Path) -> None:
    """A CLI project whose runs are recent enough for the default 30-day window."""
    s = make_settings(root, RP_CONFIG)
    now = datetime.now(UTC).replace(tzinfo=None)
    for day in range(5, 0, -1):
        add_run(
            s,
            now - timedelta(days=day),
            cov=70 + day,
            components={"xradio": 80, "astroviper": 66},
            tests={"t.py::a": ("failed", 0.2, f"token {SECRET}", f"log {SECRET}")},
        )


def test_cli_report_writes_all_formats(tmp_path: Path, cli: Cli) -> None:
    root = tmp_path / "p"
    seed_recent(root)
    env = clean_env(MY_RP_KEY=SECRET)
    done = cli("report", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    reports = root / ".testviper" / "reports"
    first = sorted(p.name for p in reports.iterdir())
    assert len(first) == 7 and "coverage-badge.svg" in first
    assert "7 files in" in done.stdout
    done = cli("report", "--runs", "2", cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    second = sorted(p.name for p in reports.iterdir())
    assert len(second) == 13 and set(first) <= set(second)
    for path in reports.iterdir():
        assert SECRET not in path.read_text()
    out = tmp_path / "elsewhere"
    done = cli("report", "--since", "2d", "--output", str(out), "--format", "badge", cwd=root)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in out.iterdir()] == ["coverage-badge.svg"]
    assert "71.0%" in (out / "coverage-badge.svg").read_text()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--since", "7x"], "--since: '7x' is not a period"),
        (["--days", "3", "--runs", "2"], "give one of --since, --days, --runs"),
        (["--format", "pdf"], "--format: 'pdf' is not one of"),
        (["--output", "/nonexistent/dir/x"], "no such directory"),
    ],
)
def test_cli_report_usage_errors(tmp_path: Path, cli: Cli, args: list[str], fragment: str) -> None:
    root = tmp_path / "p"
    make_settings(root)
    done = cli("report", *args, cwd=root)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("testviper: error: ") and fragment in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_report_on_empty_history(tmp_path: Path, cli: Cli) -> None:
    root = tmp_path / "p"
    make_settings(root)
    done = cli("report", "--format", "md", cwd=root)
    assert done.returncode == 0, done.stderr
    assert "note: no runs in history" in done.stdout
    (md,) = (root / ".testviper" / "reports").iterdir()
    assert "no runs in history" in md.read_text()


# --- rendering in a real browser ------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
@pytest.mark.parametrize("width", [1280, 390])
def test_html_renders_in_headless_chromium(tmp_path: Path, width: int) -> None:
    s = hostile_history(tmp_path / "p")
    page = tmp_path / "report.html"
    page.write_text(html(analyse(s, window())), encoding="utf-8")
    shot = tmp_path / f"shot-{width}.png"
    done = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--window-size={width},2000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert int.from_bytes(data[16:20], "big") == width
