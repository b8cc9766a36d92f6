"""What sparsam's two HTTP servers share: the activator (``sparsam activator``) and the model
server (``python -m sparsam_trainer serve``) face the same clients, careless or hostile.

- `errors`: the one JSON error middleware. Every error answer is ``{"error": "..."}``; a client's
  mistake is logged as one line without a traceback, a fault of the server with one.
- `body`: reading a request body with a size bound, a deadline between chunks and a minimum
  rate, so a slow client cannot hold a handler (and its buffer) for ever.
- `connections`: a cap on open connections and a deadline for a request's headers, which
  aiohttp does not have (its keep-alive timeout only closes connections that never start one).

Only aiohttp and the standard library: the activator must not pull in torch, nor the model
server Kopf or the Kubernetes client (an import-linter contract in pyproject.toml says so).
"""
