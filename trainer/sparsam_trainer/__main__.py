"""``python -m sparsam_trainer <train|compress|serve> ...``: one image, three pod commands.

Each subcommand's module is imported only when chosen, so the model server does not pay for
(or depend on) the training code. Exit codes: :mod:`sparsam_trainer.exitcodes`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

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


if __name__ == "__main__":
    sys.exit(main())
