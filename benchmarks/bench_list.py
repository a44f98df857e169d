"""Start-up cost of ``inv --list`` compared with a bare ``import invoke``.

Listing tasks imports tasks.py and everything it pulls in at module level; heavy
imports there slow every ``inv`` call, including tab completion.

Target: median(inv --list) / median(python -c "import invoke") <= 1.5.
``testviper --list`` is timed too and reported for information.

Usage::

    python benchmarks/bench_list.py [--runs 11]
"""

from __future__ import annotations

import argparse
import sys

from _timing import REPO_ROOT, CommandFailed, interleaved, median, venv_bin

TARGET = 1.5


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 if the target holds, 1 if not, 2 if a command failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="timed runs of each command")
    args = parser.parse_args(argv)

    commands: dict[str, list[str]] = {
        "import_invoke": [sys.executable, "-c", "import invoke"],
        "inv_list": [str(venv_bin("inv")), "--list"],
    }
    testviper = venv_bin("testviper")
    if testviper.exists():
        commands["testviper_list"] = [str(testviper), "--list"]
    else:
        print(f"note: {testviper} not installed; skipping testviper --list")

    try:
        times = interleaved(commands, REPO_ROOT, args.runs)
    except CommandFailed as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        print("RESULT list_vs_import ERROR (a command failed, see above)")
        return 2

    medians = {label: median(values) for label, values in times.items()}
    ratio = medians["inv_list"] / medians["import_invoke"]
    ok = ratio <= TARGET
    extra = ""
    if "testviper_list" in medians:
        tv_ratio = medians["testviper_list"] / medians["import_invoke"]
        extra = f" testviper_list_median={medians['testviper_list'] * 1000:.0f}ms"
        extra += f" testviper_list_ratio={tv_ratio:.2f}"
    print(
        f"RESULT list_vs_import ratio={ratio:.2f} (target <= {TARGET}) "
        f"inv_list_median={medians['inv_list'] * 1000:.0f}ms "
        f"import_invoke_median={medians['import_invoke'] * 1000:.0f}ms{extra} "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
