"""Generate a synthetic pytest suite for timing benchmarks.

The suite is a package ``benchpkg`` (subpackages ``core`` and ``util``) full of small
loop- and branch-heavy functions, plus ``n_modules`` test modules of ``tests_per_module``
tests each that call into it, so coverage tracing has real work to do. Expected values
are computed at generation time, so every generated test passes.

Usage::

    python benchmarks/gen_suite.py DEST [--modules 40] [--tests-per-module 50]
"""

from __future__ import annotations

import argparse
import random
import sys
import textwrap
from pathlib import Path
from typing import Any

CORE_MODULES = 8
UTIL_MODULES = 6

# One template serves every package module; {k} makes each copy compute different values
# (and keeps coverage from seeing identical files).
MODULE_TEMPLATE = '''\
"""Generated module {name}: number and text helpers with loops and branches."""

from __future__ import annotations

FACTOR = {k}
LIMIT = {limit}


def collatz_steps(n: int) -> int:
    """Number of Collatz steps to reach 1, capped at LIMIT."""
    steps = 0
    while n != 1 and steps < LIMIT:
        if n % 2 == 0:
            n //= 2
        else:
            n = 3 * n + 1
        steps += 1
    return steps


def is_prime(n: int) -> bool:
    """Trial-division primality test."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    d = 3
    while d * d <= n:
        if n % d == 0:
            return False
        d += 2
    return True


def classify(n: int) -> str:
    """Sort an integer into a coarse category."""
    if n < 0:
        return "negative"
    if n == 0:
        return "zero"
    if n % FACTOR == 0:
        return "multiple"
    if is_prime(n):
        return "prime"
    return "other"


def digit_sum(n: int) -> int:
    """Sum of decimal digits, repeated until a single digit remains."""
    n = abs(n)
    while n >= 10:
        total = 0
        while n:
            total += n % 10
            n //= 10
        n = total
    return n


def running_stats(values: list[int]) -> tuple[int, int, int]:
    """Minimum, maximum and a FACTOR-weighted checksum of ``values``."""
    if not values:
        raise ValueError("empty input")
    low = high = values[0]
    checksum = 0
    for index, value in enumerate(values):
        if value < low:
            low = value
        elif value > high:
            high = value
        checksum = (checksum * FACTOR + value + index) % 1_000_003
    return low, high, checksum


def bucketize(values: list[int], width: int) -> dict[int, int]:
    """Count values per bucket of ``width``."""
    if width <= 0:
        raise ValueError("width must be positive")
    buckets: dict[int, int] = {{}}
    for value in values:
        key = value // width
        buckets[key] = buckets.get(key, 0) + 1
    return buckets


def run_length(text: str) -> list[tuple[str, int]]:
    """Run-length encode ``text``."""
    runs: list[tuple[str, int]] = []
    for char in text:
        if runs and runs[-1][0] == char:
            runs[-1] = (char, runs[-1][1] + 1)
        else:
            runs.append((char, 1))
    return runs


def rarely_used(n: int) -> int:
    """Never called by the generated tests, so coverage stays below 100%."""
    result = 0
    for i in range(n):
        if i % 3 == 0:
            result += i
        else:
            result -= 1
    return result
'''

TEST_HEADER = '''\
"""Generated tests {index:02d}."""

from __future__ import annotations

'''


def module_names() -> list[str]:
    """Dotted names of all generated package modules (excluding ``__init__``)."""
    core = [f"benchpkg.core.mod_{i:02d}" for i in range(CORE_MODULES)]
    util = [f"benchpkg.util.mod_{i:02d}" for i in range(UTIL_MODULES)]
    return core + util


def module_source(name: str, k: int) -> str:
    """Source text of one generated package module."""
    return MODULE_TEMPLATE.format(name=name, k=k, limit=200 + 10 * k)


def _load(source: str, name: str) -> dict[str, Any]:
    """Execute generated source so expected values come from the same code the tests run."""
    namespace: dict[str, Any] = {"__name__": name}
    exec(compile(source, name, "exec"), namespace)
    return namespace


def _test_body(alias: str, ns: dict[str, Any], rng: random.Random) -> list[str]:
    """Assertion lines for one test: a few calls with expected values baked in."""
    start = rng.randrange(1, 5000)
    span = rng.randrange(30, 50)
    count = rng.randrange(3, 8)
    values = [rng.randrange(-50, 500) for _ in range(rng.randrange(20, 60))]
    text = "".join(rng.choice("aab") for _ in range(rng.randrange(10, 40)))
    width = rng.randrange(5, 50)
    collatz = sum(ns["collatz_steps"](n) for n in range(start, start + span))
    kinds = [ns["classify"](n) for n in range(start, start + count)]
    return [
        f"    assert sum({alias}.collatz_steps(n) for n in range({start}, {start + span}))"
        f" == {collatz}",
        f"    kinds = [{alias}.classify(n) for n in range({start}, {start + count})]",
        f"    assert kinds == {kinds!r}",
        f"    assert {alias}.digit_sum({start * 7919}) == {ns['digit_sum'](start * 7919)}",
        f"    values = {values!r}",
        f"    assert {alias}.running_stats(values) == {ns['running_stats'](values)!r}",
        f"    assert {alias}.bucketize(values, {width}) == {ns['bucketize'](values, width)!r}",
        f"    assert {alias}.run_length({text!r}) == {ns['run_length'](text)!r}",
    ]


def _test_module(index: int, tests_per_module: int, namespaces: dict[str, dict[str, Any]]) -> str:
    """Source of one generated test module."""
    rng = random.Random(index)  # per-module seed keeps regeneration byte-identical
    names = sorted(namespaces)
    used = sorted({names[(index + offset) % len(names)] for offset in range(3)})
    aliases = {name: f"m{i}" for i, name in enumerate(used)}
    lines = [TEST_HEADER.format(index=index)]
    for name in used:
        package, _, module = name.rpartition(".")
        lines.append(f"from {package} import {module} as {aliases[name]}\n")
    for test in range(tests_per_module):
        name = used[test % len(used)]
        lines.append(f"\n\ndef test_{index:02d}_{test:03d}() -> None:\n")
        lines.append("\n".join(_test_body(aliases[name], namespaces[name], rng)) + "\n")
    return "".join(lines)


def generate_suite(dest: Path, n_modules: int = 40, tests_per_module: int = 50) -> Path:
    """Write the package, tests, ``pytest.ini`` and ``testviper.yaml`` under ``dest``."""
    dest = Path(dest)
    pkg = dest / "benchpkg"
    for sub in ("core", "util"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").write_text(f'"""Generated {sub} subpackage."""\n')
    (pkg / "__init__.py").write_text('"""Generated benchmark package."""\n')

    namespaces: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(module_names(), start=3):
        source = module_source(name, k)
        (dest / (name.replace(".", "/") + ".py")).write_text(source)
        namespaces[name] = _load(source, name)

    tests = dest / "tests"
    tests.mkdir(parents=True, exist_ok=True)
    for index in range(n_modules):
        source = _test_module(index, tests_per_module, namespaces)
        (tests / f"test_mod_{index:02d}.py").write_text(source)

    # pythonpath = . so benchpkg imports however pytest is launched (python -m or in-process).
    (dest / "pytest.ini").write_text("[pytest]\ntestpaths = tests\npythonpath = .\n")
    (dest / "testviper.yaml").write_text(
        textwrap.dedent(
            """\
            # Generated benchmark suite configuration.
            project:
              name: bench-suite
            coverage:
              source: [benchpkg]
              branch: true
            components:
              core:
                source: [benchpkg/core]
              util:
                source: [benchpkg/util]
            """
        )
    )
    return dest


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="directory to generate into")
    parser.add_argument("--modules", type=int, default=40, help="number of test modules")
    parser.add_argument("--tests-per-module", type=int, default=50, help="tests per module")
    args = parser.parse_args(argv)
    generate_suite(args.dest, args.modules, args.tests_per_module)
    total = args.modules * args.tests_per_module
    print(f"generated {total} tests in {args.modules} modules under {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
