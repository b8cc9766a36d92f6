"""Build broken manifests from valid ones, one field at a time."""

from __future__ import annotations

import copy
from typing import Any

#: Pass as the value to remove the field.
DELETE: Any = object()


def with_field(manifest: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `manifest` with the dotted `path` set to `value` (DELETE removes it)."""
    changed = copy.deepcopy(manifest)
    *parents, leaf = path.split(".")
    node = changed
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = copy.deepcopy(value)
    return changed
