"""``inv profile``: run a test target like ``inv run`` and record its resource use."""

import sys

from invoke import Context, task
from invoke.exceptions import Exit

from testviper.tasks.common import CONFIG_HELP, settings, user_errors
from testviper.tasks.runs import pytest_args, report


@task(
    help={
        "config": CONFIG_HELP,
        "no_cov": "run without coverage measurement",
        "limit_rss_growth": "warn when peak RSS grew more than this many percent (default 20)",
        "limit_wall_growth": "warn when wall time grew more than this many percent (default 20)",
    },
)
@user_errors
def profile(
    c: Context,
    config: str | None = None,
    no_cov: bool = False,
    limit_rss_growth: float = 20.0,
    limit_wall_growth: float = 20.0,
) -> None:
    """Run a test target like `inv run` and profile it: inv profile [-- PATHS PYTEST_ARGS].

    The pytest process tree is sampled every 0.2 s (peak RSS summed over the tree, CPU
    mean/peak, children, I/O where available). The profile is stored with the run and
    printed beside the previous profile of the same target (same pytest arguments);
    growth beyond the limits is a warning. The exit code is pytest's. Nothing is
    delivered to ReportPortal.
    """
    from testviper.ops import profile as prof
    from testviper.runner.run import connect, run

    s = settings(config)
    args = pytest_args(c)
    sampler = prof.Sampler()
    result, code = run(s, args, cov=not no_cov, watch=sampler)
    if not report(result) and code == 0:
        code = 2
    figures = sampler.profile(prof.target_of(args))
    figures.run_id = result.run.id
    history = connect(s)
    row_id = prof.save(history, figures)
    old = prof.previous(history, figures.target, before_id=row_id)
    print(prof.format_profile(figures, old))
    for line in prof.warnings(figures, old, limit_rss_growth, limit_wall_growth):
        print(f"testviper: warning: {line}", file=sys.stderr)
    if code != 0:
        raise Exit(code=code if code > 0 else 128 - code)
