"""Failpoints: named places where the operator can be made to die, for crash tests.

    failpoints.hit("training.after-service")

does nothing unless that name is listed in the environment variable `SPARSAM_FAILPOINTS`
(comma-separated, read once at import), alone or as `NAME@NAMESPACE` to fire only for the
objects of one namespace (a shared test cluster has other jobs passing the same point). When
it is, the process logs one line and ends at once with `os._exit(137)`: no `finally`, no
atexit, no flushed Kopf state, no status patch, just as a SIGKILL or an OOM kill would leave
it. The integration test `tests/integration/test_trainingjob_crashes.py` starts `sparsam run`
with one failpoint set, waits for it to die there, restarts it without, and checks that nothing
was duplicated or lost. When the variable is unset (always, in production) a hit is one
frozenset lookup.

The failpoints, each one line in a controller's pass:

- `training.after-service`: the rendezvous Service applied; worker 0, created at the same
  time, there or not; no other worker created;
- `training.between-workers`: right after a batch of workers is created (the first batch,
  worker 0 with the Service, ends the process before the next);
- `training.after-delete`: a lost, failed or extra worker's pod deleted, the deletion not
  yet remembered and nothing created in its place;
- `training.before-status`: the pass's actions done, its status not yet written;
- `training.after-compress-pod`: the compress pod created, status not yet Compressing;
- `capacity.after-cordon` (the GPUNodePool pass): a node cordoned for its drain, nothing
  evicted, the node not deleted.

Standard library only, so that any layer may import it.
"""

from __future__ import annotations

import logging
import os
from typing import Final

#: The environment variable that names the failpoints to die at.
ENV: Final = "SPARSAM_FAILPOINTS"
#: The exit status of a failpoint: what a process killed by SIGKILL reports (128 + 9).
EXIT_CODE: Final = 137

_ARMED: Final = frozenset(
    name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()
)

_log = logging.getLogger(__name__)


def hit(name: str, namespace: str = "") -> None:
    """End the process here, as a crash would, when `name` is armed, for any object or (armed
    as `name@namespace`) for the objects of that namespace only; otherwise nothing."""
    if name in _ARMED or (namespace and f"{name}@{namespace}" in _ARMED):
        _log.warning("failpoint %s: exiting as a crash would", name)
        os._exit(EXIT_CODE)
