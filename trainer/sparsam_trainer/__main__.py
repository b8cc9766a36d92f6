"""``python -m sparsam_trainer <train|compress|serve> ...``: one image, three pod commands.

Each subcommand's module is imported only when chosen, so the model server does not pay for
(or depend on) the training code. Exit codes: :mod:`sparsam_trainer.exitcodes`.

``train`` leaves its process without interpreter teardown. Under torch 2.13 a process group that
DistributedDataParallel has used outlives ``destroy_process_group`` (gloo's threads keep running
until the process ends), and tearing the interpreter down around those threads now and then
aborts (SIGABRT, "terminate called without an active exception") after every file is written:
torchrun then reports a finished job as failed, and the operator would count it against
``backoffLimit``. Exit functions (logging's flush, a user entrypoint's trackers) still run.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from sparsam_trainer import exitcodes

_COMMANDS = {
    "train": "sparsam_trainer.train",
    "compress": "sparsam_trainer.compress.cli",
    "serve": "sparsam_trainer.serve.cli",
}
_USAGE = f"usage: python -m sparsam_trainer {{{','.join(_COMMANDS)}}} [options]"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(_USAGE)
        return exitcodes.OK if args else exitcodes.USAGE
    module_name = _COMMANDS.get(args[0])
    if module_name is None:
        print(f"unknown command {args[0]!r}\n{_USAGE}", file=sys.stderr)
        return exitcodes.USAGE
    command: Callable[[list[str]], int] = importlib.import_module(module_name).main
    return command(args[1:])


def leave(code: int) -> NoReturn:
    """End the process with ``code`` once exit functions have run, skipping teardown."""
    atexit._run_exitfuncs()  # logging's flush and whatever user code registered
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_code = main()
    if sys.argv[1:2] == ["train"]:
        leave(exit_code)
    sys.exit(exit_code)
