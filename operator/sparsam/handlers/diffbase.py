"""Kopf's diff base (the "essence" of an object it compares across events), built without
copying what it throws away.

Kopf builds the essence of every object on every watch event, pods and nodes included, by
deep-copying the whole body and then deleting metadata and status. A pod's metadata
(managedFields) and status are most of it: that copy was a tenth of the operator's CPU under
load (a py-spy profile of `benchmarks/operator_scale.py`). Here only what the essence keeps is
copied; the essence is the same, so what Kopf decides from it is too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import kopf

#: Of metadata, what the essence keeps (labels, annotations) or Kopf reads to name its keys.
_METADATA = ("labels", "annotations", "ownerReferences")


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[kopf.FieldSpec] | None = None,
    ) -> kopf.BodyEssence:
        if extra_fields:  # they may name any field, status too: Kopf's own way
            return super().build(body=body, extra_fields=extra_fields)
        metadata = body.get("metadata") or {}
        lean = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        lean["metadata"] = {key: metadata[key] for key in _METADATA if key in metadata}
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)))
