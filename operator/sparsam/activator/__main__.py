"""``python -m sparsam.activator``: the same command as ``sparsam activator``."""

import argparse
import sys

from sparsam.activator.cli import DESCRIPTION, configure, run

parser = argparse.ArgumentParser(prog="python -m sparsam.activator", description=DESCRIPTION)
configure(parser)
sys.exit(run(parser.parse_args()))
