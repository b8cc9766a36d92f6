"""The model server: ``python -m sparsam_trainer serve --model-dir DIR``.

It serves one model exported by :func:`sparsam_trainer.export.export_model` over HTTP, with the
probes and metrics an InferenceService needs: readiness that means "warmed up", a graceful drain
on SIGTERM, and Prometheus series the operator autoscales (and scales to zero) on.

HTTP API
--------

``POST /v1/predict``
    Body ``{"instances": [...]}``: 1 to ``--max-batch`` (64) instances, run as one batch. An
    instance is what the model's manifest says: for ``image`` models a list of pixel values in
    ``0..scale`` (flat, or nested to the shape, e.g. ``[1][28][28]``); for ``text`` models a
    string. Answer 200 ``{"predictions": [{"label": "sport", "index": 3, "scores": [...]}, ...],
    "model": "<task>"}``, one prediction per instance in order; ``scores`` are softmax
    probabilities in label order.
    Errors are JSON ``{"error": "<what is wrong>"}``, logged as one line: 400 for a malformed
    request (not JSON, not UTF-8, bad gzip, nested too deeply, a number literal over 64
    characters, no or empty ``instances``, too many, an instance of the wrong type, shape or
    range, booleans as pixels, a text over ``--max-text-chars`` or with a lone surrogate; the
    message names the instance, e.g. ``instances[2]: expected a string, got number``), 408 for
    headers or a body that come too slowly, 413 for a body over ``--max-request-bytes``
    (decoded), 415 for a ``Content-Type`` that is not JSON (none is taken as JSON) or a
    ``Content-Encoding`` other than gzip or deflate, 503 with ``Retry-After`` while the model
    loads, 500 only for a fault inside the server (logged with its traceback, which is never
    sent). Once loaded, the model answers until
    the process exits, draining included.
``GET /healthz``
    200 ``{"status": "alive"}`` whenever the process serves HTTP (the liveness probe).
``GET /readyz``
    200 ``{"status": "ready"}`` once the model is loaded and has answered a warm-up inference;
    503 ``{"status": "loading"}`` before, 503 ``{"status": "shutting down"}`` after SIGTERM
    (the readiness probe).
``GET /metrics``
    Prometheus text format, from the server's own registry.

Metrics (prediction requests only; probes and scrapes are not counted)
----------------------------------------------------------------------

=================================================  =========  ==================================
``sparsam_server_requests_total{code}``            counter    requests by HTTP status; 200, 400
                                                              and 503 exist from the start at 0
``sparsam_server_request_duration_seconds``        histogram  arrival to response, queueing in
``sparsam_server_inference_seconds``               histogram  encoding + model, queueing out
``sparsam_server_in_flight_requests``              gauge      received, not yet answered
``sparsam_server_batch_size``                      histogram  instances per successful request
``sparsam_server_instances_total``                 counter    instances predicted
``sparsam_server_last_request_timestamp_seconds``  gauge      Unix time of the last request
``sparsam_server_model_load_seconds``              gauge      load + warm-up time; 0 until loaded
``sparsam_server_ready``                           gauge      1 while ``/readyz`` is 200
``sparsam_server_model_info{task,format}``         gauge      always 1
=================================================  =========  ==================================

Process
-------

The server listens at once and loads the model in the background, so ``/healthz`` answers during
a long load. Inference runs on one thread beside the event loop with ``--threads`` torch threads.
On SIGTERM or SIGINT it turns unready, keeps serving for ``--shutdown-delay`` seconds (0), stops
accepting connections, lets in-flight requests finish for up to ``--grace-period`` seconds (25),
and exits 0. A model that fails to load is logged and the process exits 1; a ``--model-dir``
without a valid manifest exits 2 before listening.
Logging is one line per lifecycle event; ``--access-log`` adds one per request.
"""
