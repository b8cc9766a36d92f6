"""How many request bytes the activator keeps in memory, per service and in all.

The activator reads a request's body before it holds or forwards it, and keeps it until the
answer is sent: a service at zero with a crowd of large requests waiting would otherwise take
the process past its memory limit (40 held 15 MiB bodies were 830 MB). Each request claims its
body's bytes as they arrive (all of Content-Length at once when the client sent one) and gives
them back when it is answered; a claim that would pass the service's bound or the total is
refused, and the request answered 503 with Retry-After before more of it is read.
"""

from __future__ import annotations

from sparsam.activator.backends import ServiceKey


class BufferFullError(Exception):
    """Keeping more bytes would pass a bound; `scope` says which ("service" or "total")."""

    def __init__(self, scope: str, message: str) -> None:
        super().__init__(message)
        self.scope = scope


class ByteBudget:
    def __init__(self, per_service: int, total: int) -> None:
        self.per_service = per_service
        self.total = total
        self._used = 0
        self._by_service: dict[ServiceKey, int] = {}

    @property
    def used(self) -> int:
        return self._used

    def used_by(self, key: ServiceKey) -> int:
        return self._by_service.get(key, 0)

    def claim(self, key: ServiceKey) -> Claim:
        return Claim(self, key)

    def _take(self, key: ServiceKey, size: int) -> None:
        service = self._by_service.get(key, 0)
        if service + size > self.per_service:
            raise BufferFullError(
                "service",
                f"InferenceService {key[0]}/{key[1]} already has {service} request bytes "
                f"buffered, and the bound is {self.per_service}",
            )
        if self._used + size > self.total:
            raise BufferFullError(
                "total",
                f"the activator already has {self._used} request bytes buffered, and the bound "
                f"is {self.total}",
            )
        self._by_service[key] = service + size
        self._used += size

    def _give(self, key: ServiceKey, size: int) -> None:
        left = self._by_service[key] - size
        if left:
            self._by_service[key] = left
        else:
            del self._by_service[key]
        self._used -= size


class Claim:
    """One request's bytes: `reserve` more as they come, `release` all when answered."""

    def __init__(self, budget: ByteBudget, key: ServiceKey) -> None:
        self._budget = budget
        self._key = key
        self.size = 0

    def reserve(self, size: int) -> None:
        """Keep `size` more bytes; BufferFullError (nothing taken) when over a bound."""
        self._budget._take(self._key, size)
        self.size += size

    def release(self) -> None:
        if self.size:
            self._budget._give(self._key, self.size)
            self.size = 0
