"""OCI image archives: valid layouts, correct digests and sizes, deterministic layers."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from sparsam.devcluster import oci


def _tree(root: Path) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "usr/bin/tool").chmod(0o755)
    (root / "usr/bin/alias").symlink_to("tool")
    os.link(root / "usr/bin/tool", root / "usr/bin/twin")
    (root / "etc").mkdir()
    (root / "etc/zeta").write_text("z")
    (root / "etc/alpha").write_text("a")
    return root


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_a_layer_is_a_sorted_gzip_tar_with_fixed_times_and_its_digests(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    layer = oci.write_layer(root, tmp_path / "layer.tar.gz", owner=(0, 0))
    blob = layer.path.read_bytes()
    assert layer.digest == _sha256(blob)
    assert layer.size == len(blob)
    plain = gzip.decompress(blob)
    assert layer.diff_id == _sha256(plain)
    assert blob[4:8] == b"\0\0\0\0", "no time in the gzip header"
    with tarfile.open(tmp_path / "layer.tar.gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert names == [
        "etc",
        "etc/alpha",
        "etc/zeta",
        "usr",
        "usr/bin",
        "usr/bin/alias",
        "usr/bin/tool",
        "usr/bin/twin",
    ]
    assert {m.mtime for m in members} == {oci.EPOCH}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    by_name = {m.name: m for m in members}
    assert by_name["usr/bin/alias"].issym() and by_name["usr/bin/alias"].linkname == "tool"
    assert by_name["usr/bin/tool"].mode == 0o755
    assert by_name["usr/bin/twin"].islnk() and by_name["usr/bin/twin"].linkname == "usr/bin/tool"
    assert layer.unpacked_size == len(b"#!/bin/sh\necho hi\n") + 2


def test_the_same_files_give_the_same_layer_whenever_written(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    first = oci.write_layer(root, tmp_path / "one.tar.gz")
    os.utime(root / "etc/alpha", (1, 1))
    second = oci.write_layer(root, tmp_path / "two.tar.gz")
    assert (first.digest, first.diff_id) == (second.digest, second.diff_id)
    (root / "etc/alpha").write_text("b")
    assert oci.write_layer(root, tmp_path / "three.tar.gz").diff_id != first.diff_id


def test_a_layer_keeps_owners_and_can_list_members_and_whiteouts(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    os.chown(root / "etc/zeta", 65532, 65532)
    layer = oci.write_layer(
        root,
        tmp_path / "layer.tar.gz",
        members=["etc", "etc/zeta"],
        whiteouts=["etc/gone", "usr/lib/old"],
    )
    with tarfile.open(layer.path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == ["etc", "etc/.wh.gone", "etc/zeta", "usr/lib/.wh.old"]
    assert (members["etc/zeta"].uid, members["etc/zeta"].gid) == (65532, 65532)
    assert members["etc/.wh.gone"].isreg() and members["etc/.wh.gone"].size == 0


def _archive(tmp_path: Path) -> tuple[Path, oci.Layer, dict[str, Any]]:
    layer = oci.write_layer(_tree(tmp_path / "root"), tmp_path / "layer.tar.gz")
    config = oci.image_config(
        [layer],
        user="65532:65532",
        entrypoint=["/usr/bin/tool"],
        cmd=["run"],
        env={"PATH": "/usr/bin"},
        labels={"k": "v"},
    )
    out = tmp_path / "image.tar"
    oci.write_archive(out, [layer], config, "ghcr.io/sparsam/sparsam-operator:0.1.0")
    return out, layer, config


def test_an_archive_is_an_oci_layout_whose_blobs_match_their_digests(tmp_path: Path) -> None:
    out, layer, config = _archive(tmp_path)
    with tarfile.open(out) as tar:
        files = {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    blobs = {name.removeprefix("blobs/sha256/"): data for name, data in files.items()}
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.removeprefix("blobs/sha256/")
    index = json.loads(files["index.json"])
    assert index["schemaVersion"] == 2 and index["mediaType"] == oci.MEDIA_INDEX
    (described,) = index["manifests"]
    assert described["annotations"] == {
        "io.containerd.image.name": "ghcr.io/sparsam/sparsam-operator:0.1.0",
        "org.opencontainers.image.ref.name": "0.1.0",
    }
    manifest_blob = blobs[described["digest"].removeprefix("sha256:")]
    assert described["size"] == len(manifest_blob)
    assert described["mediaType"] == oci.MEDIA_MANIFEST
    manifest = json.loads(manifest_blob)
    config_blob = blobs[manifest["config"]["digest"].removeprefix("sha256:")]
    assert manifest["config"]["size"] == len(config_blob)
    assert json.loads(config_blob) == config
    assert json.loads(config_blob)["rootfs"]["diff_ids"] == [layer.diff_id]
    assert manifest["layers"] == [
        {"mediaType": oci.MEDIA_LAYER, "digest": layer.digest, "size": layer.size}
    ]
    assert blobs[layer.digest.removeprefix("sha256:")] == layer.path.read_bytes()
    assert json.loads(config_blob)["config"] == {
        "User": "65532:65532",
        "Entrypoint": ["/usr/bin/tool"],
        "Cmd": ["run"],
        "Env": ["PATH=/usr/bin"],
        "Labels": {"k": "v"},
    }


def test_an_archive_of_the_same_image_is_the_same_bytes(tmp_path: Path) -> None:
    first, _, _ = _archive(tmp_path / "a")
    second, _, _ = _archive(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()


def test_a_ref_without_a_tag_is_tagged_latest(tmp_path: Path) -> None:
    layer = oci.write_layer(_tree(tmp_path / "root"), tmp_path / "layer.tar.gz")
    out = tmp_path / "image.tar"
    oci.write_archive(out, [layer], oci.image_config([layer]), "localhost:5000/pause")
    with tarfile.open(out) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
    annotations = index["manifests"][0]["annotations"]
    assert annotations["org.opencontainers.image.ref.name"] == "latest"
    assert annotations["io.containerd.image.name"] == "localhost:5000/pause"


def test_a_big_layer_is_gzipped_fast_and_a_small_one_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "root")
    # gzip's header says which: XFL (byte 8) is 4 for the fastest level, 0 for the default.
    assert oci.write_layer(root, tmp_path / "small.tar.gz").path.read_bytes()[8] == 0
    monkeypatch.setattr(oci, "FAST_GZIP_ABOVE", 10)
    assert oci.write_layer(root, tmp_path / "big.tar.gz").path.read_bytes()[8] == 4
