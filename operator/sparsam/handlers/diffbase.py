"""Kopf's diff base (the "essence" of an object it compares across events), built only for
the kinds whose handlers read a diff.

Kopf builds the essence of every object on every watch event, pods and nodes included, by
deep-copying the whole body and then deleting metadata and status, and compares it with the
previous one. Only changing handlers (`on.create/update/delete`) and timers or daemons with
`idle=` read that diff; of ours, only GPUNodePool's `on.delete`. For every other kind the copy
and the comparison were a tenth of the operator's CPU under load (a py-spy profile of
`benchmarks/operator_scale.py`); their essence is empty here, which is all Kopf needs of it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Final

import kopf

from sparsam.api import constants as c

#: (apiVersion, kind) of the objects whose handlers read a diff. `tests/unit/test_diffbase.py`
#: checks the registry against it, so a new changing handler cannot be left out.
DIFFED: Final = frozenset({(c.API_VERSION, c.GPU_NODE_POOL.kind)})


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    def __init__(self, *, diffed: Collection[tuple[str, str]], prefix: str, key: str) -> None:
        super().__init__(prefix=prefix, key=key)
        self._diffed = frozenset(diffed)

    def build(
        self,
        *,
        body: kopf.Body,
        extra_fields: Iterable[kopf.FieldSpec] | None = None,
    ) -> kopf.BodyEssence:
        kind = (body.get("apiVersion"), body.get("kind"))
        # Without a kind (never from Kopf's lists or watches), Kopf's own essence: safe.
        if kind in self._diffed or None in kind:
            return super().build(body=body, extra_fields=extra_fields)
        return kopf.BodyEssence()
