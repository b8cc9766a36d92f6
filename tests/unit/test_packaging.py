"""What ships: the chart's CRDs are the API's, and the images run commands that exist."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from sparsam.api.costpolicy import CostPolicy
from sparsam.api.gpunodepool import GPUNodePool

ROOT = Path(__file__).resolve().parents[2]
CHART_CRDS = ROOT / "charts" / "sparsam" / "crds"


def test_the_charts_crds_are_the_apis() -> None:
    ours = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in CHART_CRDS.glob("*.yaml")}
    assert set(chart) == set(ours)
    for name, content in ours.items():
        assert chart[name] == content, f"charts/sparsam/crds/{name} differs from crds/{name}"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


@pytest.mark.parametrize("image", ["operator", "trainer"])
def test_images_are_pinned_and_non_root(image: str) -> None:
    steps = instructions(ROOT / "images" / f"{image}.Dockerfile")
    bases = [arg.split()[0] for op, arg in steps if op == "FROM"]
    assert bases and all(re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", b) for b in bases)
    (user,) = [arg for op, arg in steps if op == "USER"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "a numeric non-root uid:gid"


def test_image_commands_exist() -> None:
    """The operator image's entrypoint is our console script; the trainer image's command and
    the ones the operator puts in pods are modules of the package."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    steps = dict(instructions(ROOT / "images" / "operator.Dockerfile"))
    assert steps["ENTRYPOINT"] == '["sparsam"]'
    assert "sparsam" in project["scripts"]
    assert project["scripts"]["sparsam"] == "sparsam.cli:main"
    trainer = dict(instructions(ROOT / "images" / "trainer.Dockerfile"))
    assert "sparsam_trainer" in trainer["CMD"]
    assert (ROOT / "trainer" / "sparsam_trainer" / "__main__.py").is_file()
    assert "torch==" in " ".join(project["optional-dependencies"]["trainer"])


def test_gitops_examples_are_valid_sparsam_objects() -> None:
    """Every sparsam object under examples/gitops/ reads into its model (the CRDs' defaults and
    rules are checked on the real apiserver by the validation tests)."""
    models = {"CostPolicy": CostPolicy, "GPUNodePool": GPUNodePool}
    seen: dict[str, int] = {}
    for path in sorted((ROOT / "examples" / "gitops").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion") == "sparsam.dev/v1alpha1":
                models[doc["kind"]].from_body(doc)
                seen[doc["kind"]] = seen.get(doc["kind"], 0) + 1
    assert seen == {"CostPolicy": 2, "GPUNodePool": 2}


@pytest.mark.parametrize("chart", ["sparsam", "sparsam-crds"])
def test_the_charts_readme_is_generated_from_its_values(chart: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "charts" / "readme.py"),
            "--check",
            str(ROOT / "charts" / chart),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_crd_chart_ships_the_apis_crds() -> None:
    files = ROOT / "charts" / "sparsam-crds" / "crd-files"
    assert files.is_symlink() and files.resolve() == (ROOT / "crds").resolve()
