"""Process exit codes of ``python -m sparsam_trainer``; the operator reads them from pod status.

========================  =====  ============================================================
name                      code   meaning
========================  =====  ============================================================
``OK``                    0      finished; outputs written
``FAILED``                1      failed; retrying the same command will not help by itself
``USAGE``                 2      bad command line or bad input (unknown task, bad entrypoint,
                                 malformed interval); fix the spec
``PREEMPTED``             75     preempted (SIGTERM): a checkpoint was written and the run is
                                 resumable from it; EX_TEMPFAIL from sysexits.h
``BUDGET_EXCEEDED``       76     compression result rejected: the accuracy drop is above
                                 ``maxAccuracyDrop``
========================  =====  ============================================================
"""

from __future__ import annotations

OK = 0
FAILED = 1
USAGE = 2
PREEMPTED = 75
BUDGET_EXCEEDED = 76
