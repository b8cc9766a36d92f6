"""Kopf handlers: thin adapters from watch events, work queues and timers to controllers/ and
decisions/. Each module has a `register(registry, ...)` function; `sparsam.main` composes them."""
