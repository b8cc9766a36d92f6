"""Log output of sparsam's processes (`sparsam run`, `sparsam activator`): one line per record,
or one JSON object per record for log pipelines (`--log-format json`)."""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the error when there is one,
    and the object a Kopf handler was working on (namespace, name) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            entry["object"] = {k: ref.get(k) for k in ("kind", "namespace", "name") if ref.get(k)}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class RoutineSuccess(logging.Filter):
    """Drops Kopf's "Timer 'reconcile' succeeded." and "Handler 'queue' succeeded." at INFO: the
    periodic passes and the event handlers run for every object every few seconds, so these
    were most of the log (100 lines a second with 500 TrainingJobs), and told nothing that
    status does not. Failures and retries are WARNING and ERROR, and stay; at DEBUG all do."""

    _MESSAGE = re.compile(r"(Timer|Handler) '[^']*' succeeded\.")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and record.name == "kopf.objects"
            and self._MESSAGE.fullmatch(record.getMessage()) is not None
        )


def configure(log_format: str) -> None:
    """Root logging for a process: "text" or "json", at $SPARSAM_LOG_LEVEL (default INFO)."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    level = os.environ.get("SPARSAM_LOG_LEVEL", "INFO")
    if logging.getLevelName(level) != logging.DEBUG:
        handler.addFilter(RoutineSuccess())
    logging.basicConfig(level=level, handlers=[handler], force=True)
