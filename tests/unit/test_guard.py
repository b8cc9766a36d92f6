"""operator/ is a source root, not a package: a package named `operator` would shadow the
standard library's, and everything from functools to kopf imports that."""

from __future__ import annotations

import operator
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_operator_folder_is_not_a_package() -> None:
    assert not (ROOT / "operator" / "__init__.py").exists()
    assert not (ROOT / "trainer" / "__init__.py").exists()


def test_import_operator_is_the_standard_library() -> None:
    assert operator.__file__ is not None
    assert Path(operator.__file__).parent == Path(subprocess.__file__).parent
    assert operator.add(2, 3) == 5


def test_import_operator_from_the_repo_root_is_the_standard_library() -> None:
    # With the repo root first on sys.path, as `python -m pytest` from the root puts it.
    code = "import operator, sys; print(operator.__file__); print(hasattr(operator, 'itemgetter'))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    path, has_itemgetter = done.stdout.split()
    assert has_itemgetter == "True"
    assert not Path(path).is_relative_to(ROOT)
