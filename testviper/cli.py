"""The ``testviper`` console script: the same task tree as ``inv``, usable anywhere.

Invoke is imported only once ``testviper run`` has started loading pytest
(``testviper.runner.starter.early``).
"""

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from invoke import Program


def build_program() -> "Program":
    """Invoke's ``Program`` over TestViper's task tree."""
    from invoke import Program

    from testviper import __version__
    from testviper.tasks import ns

    return Program(namespace=ns, version=__version__, name="TestViper", binary_names=["testviper"])


def main() -> None:
    """The console script."""
    from testviper.runner.starter import early

    early(sys.argv[1:])
    build_program().run()
