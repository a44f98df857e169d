"""``inv report``: JSON reports, an HTML page, a Markdown digest and a badge from history."""

from invoke import Context, task

from testviper.tasks.common import CONFIG_HELP, settings, user_errors


@task(
    help={
        "config": CONFIG_HELP,
        "since": "window: runs started within this period, like 12h, 7d or 2w",
        "days": "window: runs of the last N days (default 30)",
        "runs": "window: the last N runs",
        "branch": "git branch (default: the branch of the newest run)",
        "output": "directory for the files (default: <state>/reports)",
        "format": "all (default) | json | html | md | badge",
    }
)
@user_errors
def report(
    c: Context,
    config: str | None = None,
    since: str | None = None,
    days: int = 0,
    runs: int = 0,
    branch: str | None = None,
    output: str | None = None,
    format: str = "all",
) -> None:
    """Coverage and test trends over a window of runs, as JSON, HTML, Markdown and a badge."""
    from pathlib import Path

    from testviper.analytics.core import analyse, make_window
    from testviper.errors import UserError
    from testviper.reports.writer import FORMATS, write_reports

    if format not in FORMATS:
        raise UserError(f"--format: '{format}' is not one of {', '.join(FORMATS)}")
    if days < 0 or runs < 0:
        raise UserError("--days and --runs must be at least 1")
    s = settings(config, check_paths=False)
    window = make_window(since=since, days=days or None, runs=runs or None)
    directory = Path(output) if output else s.state_dir / "reports"
    if output and not directory.parent.is_dir():
        raise UserError(f"--output {output}: no such directory '{directory.parent}'")
    analytics = analyse(s, window, branch)
    written = write_reports(s, analytics, directory, format)
    if analytics.state_note:
        print(f"note: {analytics.state_note}")
    print(f"{len(written.files)} files in {directory}:")
    for path in written.files:
        print(f"  {path.name}")
