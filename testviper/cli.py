"""The ``testviper`` console script: the same task tree as ``inv``, usable anywhere."""

from invoke import Program

from testviper import __version__
from testviper.tasks import ns

program = Program(namespace=ns, version=__version__, name="TestViper", binary_names=["testviper"])
