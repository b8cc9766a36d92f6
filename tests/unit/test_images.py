"""The images `sparsam images build` makes are the ones images/*.Dockerfile describe."""

from __future__ import annotations

import json
import os
import re
import shlex
import time
import tomllib
from pathlib import Path

import pytest

from sparsam import __version__
from sparsam.devcluster.errors import DevClusterError
from sparsam.devcluster.images import CPU_LEFT_OUT, IMAGES, ImageSpec, ensure_image, pinned

ROOT = Path(__file__).resolve().parents[2]


def _final_stage(dockerfile: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(the build stages' instructions, the final stage's instructions)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    steps = [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in (raw.strip() for raw in text.splitlines())
        if line and not line.startswith("#")
    ]
    last = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[:last], steps[last:]


def _one(steps: list[tuple[str, str]], op: str) -> str:
    found = [arg for name, arg in steps if name == op]
    assert len(found) <= 1, f"more than one {op}"
    return found[0] if found else ""


def _exec_form(argument: str) -> tuple[str, ...]:
    return tuple(json.loads(argument)) if argument else ()


@pytest.mark.parametrize("name", [name for name, spec in IMAGES.items() if spec.dockerfile])
def test_the_dockerfile_and_the_builder_describe_the_same_image(name: str) -> None:
    spec = IMAGES[name]
    build, final = _final_stage(ROOT / "images" / spec.dockerfile)
    assert _one(final, "USER") == spec.user
    assert _exec_form(_one(final, "ENTRYPOINT")) == spec.entrypoint
    assert _exec_form(_one(final, "CMD")) == spec.cmd
    assert _one(final, "WORKDIR") == spec.workdir
    env = tuple(tuple(pair.split("=", 1)) for pair in shlex.split(_one(final, "ENV")))
    assert env == spec.env
    installs = [shlex.split(arg) for op, arg in final if op == "RUN" and "pip install" in arg]
    (install,) = installs
    assert [word for word in install if word.startswith("sparsam")] == [spec.package]
    # Both pin the same versions: the build stage resolves under the builder's lock file.
    copies = [arg.split() for op, arg in build if op == "COPY"]
    assert [f"images/{spec.requirements}", "requirements.txt"] in copies
    wheel = next(arg for op, arg in build if op == "RUN" and "pip wheel" in arg)
    assert "--constraint requirements.txt" in wheel
    assert spec.package.replace("sparsam", ".") in [word.strip('"') for word in wheel.split()]


def test_refs_and_users() -> None:
    assert IMAGES["operator"].ref == f"ghcr.io/sparsam/sparsam-operator:{__version__}"
    assert IMAGES["trainer"].ref == f"ghcr.io/sparsam/sparsam-trainer:{__version__}"
    assert IMAGES["trainer-cpu"].ref == f"ghcr.io/sparsam/sparsam-trainer:{__version__}-cpu"
    assert re.fullmatch(r"localhost/sparsam/pause:\d+\.\d+\.\d+", IMAGES["pause"].ref)
    for spec in IMAGES.values():
        if spec.package:
            assert spec.user == "65532:65532"


def _names(pins: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", pin.split("==")[0]).lower() for pin in pins}


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", r)[0]).lower() for r in requirements}


def test_the_locks_pin_every_dependency_of_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = _requirement_names(project["dependencies"])
    trainer = base | _requirement_names(project["optional-dependencies"]["trainer"])
    assert base <= _names(pinned(IMAGES["operator"]))
    assert "torch" not in _names(pinned(IMAGES["operator"]))
    assert trainer <= _names(pinned(IMAGES["trainer"]))
    assert trainer <= _names(pinned(IMAGES["trainer-cpu"]))
    for spec in IMAGES.values():
        for pin in pinned(spec) if spec.requirements else []:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+!-]+", pin), pin


def test_the_cpu_trainer_is_the_trainer_without_cuda_wheels() -> None:
    gpu, cpu = set(pinned(IMAGES["trainer"])), set(pinned(IMAGES["trainer-cpu"]))
    left_out = gpu - cpu
    assert cpu < gpu
    assert left_out and all(pin.lower().startswith(CPU_LEFT_OUT) for pin in left_out)
    assert len(left_out) == len(CPU_LEFT_OUT), "each left-out name is pinned in the lock"
    assert any(pin.startswith("triton==") for pin in left_out)
    # What `import torch` links stays: PyPI's torch is a CUDA build even on the CPU.
    for kept in ("torch==", "nvidia-cublas==", "nvidia-cudnn-cu13==", "nvidia-nccl-cu13=="):
        assert any(pin.startswith(kept) for pin in cpu), kept


def test_an_unknown_image_is_a_one_line_error() -> None:
    with pytest.raises(DevClusterError, match=r"no image named 'nope': choose from pause, "):
        ensure_image("nope")


def test_an_unpinned_requirement_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "x.txt").write_text("# fine\ntorch==2.13.0\nnumpy>=1\n")
    monkeypatch.setattr("sparsam.devcluster.images.REQUIREMENTS_DIR", tmp_path)
    with pytest.raises(DevClusterError, match=r"'numpy>=1' is not pinned"):
        pinned(ImageSpec("x", "x:1", requirements="x.txt"))


def test_only_idle_archives_of_the_same_image_are_pruned(tmp_path: Path) -> None:
    from sparsam.devcluster.images import ARCHIVE_IDLE_S, _prune

    names = ["trainer-aaaa", "trainer-bbbb", "trainer-cccc", "trainer-cpu-dddd"]
    for name in names:
        (tmp_path / f"{name}.tar").write_bytes(b"x")
        (tmp_path / f"{name}.json").write_text("{}")
    idle = time.time() - ARCHIVE_IDLE_S - 60
    for name in ("trainer-aaaa", "trainer-cpu-dddd"):
        os.utime(tmp_path / f"{name}.tar", (idle, idle))
    _prune(tmp_path, "trainer", keep=tmp_path / "trainer-bbbb.tar")
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == [
        "trainer-bbbb.tar",
        "trainer-cccc.tar",  # recently used, perhaps by another checkout's build
        "trainer-cpu-dddd.tar",  # another image
    ]
    assert not (tmp_path / "trainer-aaaa.json").exists()


def test_an_unwritable_cache_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("SPARSAM_IMAGE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DevClusterError, match=r"^building the pause image failed: "):
        ensure_image("pause")


def test_the_cli_refuses_an_unknown_image_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from sparsam.cli import main

    assert main(["images", "build", "pause", "nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "sparsam: error: no image named 'nope': choose from pause, operator, trainer, trainer-cpu"
    )
