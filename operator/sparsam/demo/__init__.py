"""`sparsam demo`: the dev cluster with sparsam running on it, and the real processes that
KWOK pods cannot run (the model server at its pod's IP, Prometheus), shared with the tests."""
