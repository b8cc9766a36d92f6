"""OCI image layouts in a tar archive, written without a container engine.

A layer is a gzip-compressed tar of a folder (or of a chosen set of paths in it, plus whiteouts
for what a layer deletes), written deterministically: entries sorted, every mtime the same fixed
value, owners kept as numeric uid/gid with no names, gzip header without name or time. So the
same files give the same digest on every machine and every run.

An archive is what `ctr images import`, `skopeo copy oci-archive:...` and `podman load` read: the
files `oci-layout` and `index.json` and the blobs under `blobs/sha256/`. Its one manifest carries
the annotations containerd names the image by (`io.containerd.image.name`, the full reference)
and the OCI tag annotation (`org.opencontainers.image.ref.name`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Final

#: Every entry's mtime in a layer: 2024-01-01T00:00:00Z (fixed, so digests do not depend on when
#: files were written; Python's .pyc files in our images are hash-based, not mtime-based).
EPOCH: Final = 1704067200

MEDIA_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_NAME: Final = "io.containerd.image.name"
ANNOTATION_REF: Final = "org.opencontainers.image.ref.name"

#: Layers with more file content than this are gzipped at level 1, the rest at 6 (gzip's
#: default). Measured on the trainer's dependencies (5.9 GB: torch, the CUDA libraries): level 6
#: compresses about 37 MB/s of one core, level 1 about 72 MB/s for 5% more bytes, so 1.5 minutes
#: of CPU saved per rebuild. On small layers of Python code level 1 costs 15-30% more bytes and
#: saves seconds, so they keep level 6.
FAST_GZIP_ABOVE: Final = 1 << 30


@dataclass(frozen=True, slots=True)
class Layer:
    """A gzip-compressed layer blob on disk and what a manifest and a config say about it."""

    path: Path
    digest: str  # sha256 of the compressed blob: the manifest's descriptor
    size: int  # bytes of the compressed blob
    diff_id: str  # sha256 of the uncompressed tar: the config's rootfs.diff_ids
    unpacked_size: int  # bytes of regular-file content in the layer

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "size": self.size,
            "diff_id": self.diff_id,
            "unpacked_size": self.unpacked_size,
        }

    @classmethod
    def from_json(cls, path: Path, data: Mapping[str, Any]) -> Layer:
        return cls(
            path,
            str(data["digest"]),
            int(data["size"]),
            str(data["diff_id"]),
            int(data["unpacked_size"]),
        )


class _Digesting(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through it on the way to `sink`."""

    def __init__(self, sink: BinaryIO) -> None:
        super().__init__()
        self.sink = sink
        self.sha256 = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.count += len(view)
        self.sink.write(view)
        return len(view)

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256.hexdigest()}"


def walk(root: Path) -> list[str]:
    """Every path under `root` (relative, POSIX), sorted, folders before what they hold."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        relative = Path(folder).relative_to(root)
        for name in sorted([*dirs, *files]):
            found.append((relative / name).as_posix())
    return sorted(found)


def write_layer(
    root: Path,
    out: Path,
    members: Iterable[str] | None = None,
    whiteouts: Iterable[str] = (),
    level: int | None = None,
    owner: tuple[int, int] | None = None,
) -> Layer:
    """Write `members` of `root` (default: all of it) as a gzip layer at `out`.

    `whiteouts` are paths a lower layer has and this one deletes (`dir/.wh.name` entries).
    Sockets and device nodes are left out: an image's /dev is the runtime's. `owner` (uid, gid)
    replaces every entry's owner (a layer built from a user's files that must be root's).
    `level` is gzip's; by default 6, or 1 for a layer of more than FAST_GZIP_ABOVE bytes.
    """
    names = sorted(set(walk(root) if members is None else members))
    if level is None:
        content = sum(_file_size(root / name) for name in names)
        level = 1 if content > FAST_GZIP_ABOVE else 6
    deleted = [PurePosixPath(path) for path in whiteouts]
    unpacked = 0
    with out.open("wb") as raw:
        compressed = _Digesting(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0,
                           compresslevel=level) as zipped:  # fmt: skip
            plain = _Digesting(zipped)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                entries = [(name, False) for name in names]
                entries += [(str(path.parent / f".wh.{path.name}"), True) for path in deleted]
                for name, is_whiteout in sorted(entries):
                    if is_whiteout:
                        tar.addfile(_whiteout(name))
                    else:
                        unpacked += _add(tar, root / name, name, owner)
    return Layer(out, compressed.digest, compressed.count, plain.digest, unpacked)


def _file_size(path: Path) -> int:
    st = path.lstat()
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def _whiteout(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = EPOCH
    info.mode = 0o644
    return info


def _add(tar: tarfile.TarFile, path: Path, name: str, owner: tuple[int, int] | None) -> int:
    st = path.lstat()
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        return 0
    info = tar.gettarinfo(str(path), arcname=name)
    info.mtime = EPOCH
    info.uname = info.gname = ""
    if owner is not None:
        info.uid, info.gid = owner
    if info.isreg():
        with path.open("rb") as handle:
            tar.addfile(info, handle)
        return info.size
    tar.addfile(info)
    return 0


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def image_config(
    layers: Sequence[Layer],
    *,
    user: str = "",
    entrypoint: Sequence[str] = (),
    cmd: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    workdir: str = "",
    labels: Mapping[str, str] | None = None,
    architecture: str = "amd64",
) -> dict[str, Any]:
    """An OCI image configuration for these layers (fields left empty are left out)."""
    config: dict[str, Any] = {}
    if user:
        config["User"] = user
    if entrypoint:
        config["Entrypoint"] = list(entrypoint)
    if cmd:
        config["Cmd"] = list(cmd)
    if env:
        config["Env"] = [f"{key}={value}" for key, value in env.items()]
    if workdir:
        config["WorkingDir"] = workdir
    if labels:
        config["Labels"] = dict(labels)
    return {
        "architecture": architecture,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }


def write_archive(out: Path, layers: Sequence[Layer], config: Mapping[str, Any], ref: str) -> str:
    """Write an OCI image layout tar at `out` with one image named `ref`; return its manifest
    digest."""
    config_blob = canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": _descriptor(MEDIA_CONFIG, config_blob),
        "layers": [
            {"mediaType": MEDIA_LAYER, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    manifest_blob = canonical_json(manifest)
    tag = ref.rsplit(":", 1)[1] if ":" in ref.rsplit("/", 1)[-1] else "latest"
    described = _descriptor(MEDIA_MANIFEST, manifest_blob)
    described["annotations"] = {ANNOTATION_NAME: ref, ANNOTATION_REF: tag}
    described["platform"] = {"architecture": config["architecture"], "os": config["os"]}
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [described]}
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(tar, "index.json", canonical_json(index))
        _add_folder(tar, "blobs")
        _add_folder(tar, "blobs/sha256")
        blobs: dict[str, bytes | Path] = {
            _digest(config_blob): config_blob,
            _digest(manifest_blob): manifest_blob,
        }
        blobs.update({layer.digest: layer.path for layer in layers})
        for digest, blob in sorted(blobs.items()):
            name = f"blobs/sha256/{digest.removeprefix('sha256:')}"
            if isinstance(blob, bytes):
                _add_bytes(tar, name, blob)
                continue
            info = _info(name, blob.stat().st_size)
            with blob.open("rb") as handle:
                tar.addfile(info, handle)
    return str(described["digest"])


def _digest(blob: bytes) -> str:
    return f"sha256:{hashlib.sha256(blob).hexdigest()}"


def _descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": _digest(blob), "size": len(blob)}


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = EPOCH
    info.mode = 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    tar.addfile(_info(name, len(blob)), io.BytesIO(blob))


def _add_folder(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = EPOCH
    tar.addfile(info)
