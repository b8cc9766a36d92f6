"""The activator: ``sparsam activator``, the front door of every InferenceService.

It receives the traffic of InferenceServices (``status.url`` is ``<activator>/<namespace>/
<name>``), forwards it to a ready replica, and while a service has none (scaled to zero, or
waking) holds the requests and asks the operator to wake the service. It also counts the
traffic, because the model servers see nothing while there are none: the operator autoscales
and scales to zero on the activator's metrics.

HTTP API
--------

``ANY /<namespace>/<name>/<path>?<query>``
    Forwarded to ``http://<podIP>:<port named http>/<path>?<query>`` of a ready replica of the
    InferenceService, round-robin: method, body and headers as the client sent them (minus
    hop-by-hop headers and Host, and nothing added but X-Forwarded-For/-Host/-Proto, which the
    activator sets itself: a client's own are kept only from a ``--trusted-proxy``); the
    replica's status, headers and body come back.
    With no ready replica the request is held, up to ``--hold-timeout`` (60s), and released the
    moment one turns ready. Answers of the activator's own are JSON ``{"error": "..."}``:
    404 for an unknown InferenceService or a path without ``<namespace>/<name>``; 503 with
    ``Retry-After`` when the hold timeout passes or the service's hold queue
    (``--max-held``, 1000) is full; 502 when a replica failed after the request was sent (not
    retried: it may not be idempotent); 504 when it did not answer within
    ``--upstream-timeout``; 413 for a body over ``--max-request-bytes``; 503 with
    ``Retry-After`` when keeping the body would pass ``--max-buffered-bytes-per-service`` or
    ``--max-buffered-bytes``; 408 for headers or a body that come too slowly
    (``--header-timeout``, ``--body-timeout``, ``--body-min-rate``); past
    ``--max-connections`` a new connection gets 503 and is closed.
    A request that could not be sent (connection refused: the pod is Ready before the process
    in it listens) is tried on the other replicas and again every 50 ms until the hold
    timeout, as is one a replica answered 503 with ``Retry-After`` (a model server that is
    still loading has not run it): then one held request probes that replica every 20 ms and
    the others wait for its news, so a crowd never hammers a loading server. So no request is
    lost across a wake-up.
``GET /-/healthz``
    200 ``{"status": "alive"}`` (liveness). ``-`` cannot start a namespace, so these paths never
    shadow a service.
``GET /-/readyz``
    200 once the activator has listed InferenceServices and their pods; 503 before.
``GET /-/metrics``
    Prometheus text format, from the activator's own registry (see below).

Waking
------

While a known service has requests held, the activator sets the annotation
``sparsam.dev/wake-requested-at`` on the InferenceService to the current time (RFC 3339, UTC,
microseconds) with a JSON merge patch, at most once per second per service however many
requests wait. The operator scales a service whose annotation is newer than the last one it
handled to at least one replica.

Metrics
-------

Labels ``namespace`` and ``inference_service`` on every series; only known services are
counted (a 404 for an unknown name creates no series).

- ``sparsam_activator_requests_total`` (counter): requests received; 0 from the start for every
  known InferenceService, so "present and zero" means "the activator is up, nobody called".
- ``sparsam_activator_responses_total{code}`` (counter): responses sent, by status code (the
  replica's, or the activator's own 404/413/502/503/504; 499 when the client went away).
- ``sparsam_activator_requests_in_flight`` (gauge): received, not yet answered, held included.
- ``sparsam_activator_held_requests`` (gauge): waiting for a ready replica (queue depth).
- ``sparsam_activator_hold_seconds`` (histogram): time a request waited for a ready replica
  before it was forwarded (or answered 503); requests that did not wait are not observed.
- ``sparsam_activator_last_request_timestamp_seconds`` (gauge): Unix time of the last request;
  absent until the first one since the activator started.
- ``sparsam_activator_buffered_request_bytes`` (gauge): body bytes kept in memory now.
- ``sparsam_activator_refused_total{reason}`` (counter): requests refused before they were held
  or forwarded: ``buffer_full_service``, ``buffer_full_total``, ``body_too_large``,
  ``body_too_slow``, ``body_unreadable``.
- ``sparsam_activator_connections_cut_total{reason}`` (counter, no service labels):
  ``too_many_connections``, ``header_timeout``.

The series of a deleted InferenceService are dropped at the next scrape.

Modes
-----

In a cluster it watches, cluster-wide, Pods labelled ``sparsam.dev/inference-service`` (a
backend is Running, has a podIP, is Ready and is not terminating) and InferenceServices; its
ServiceAccount needs get/list/watch on pods and inferenceservices and patch on
inferenceservices. With ``--backend NAMESPACE/NAME=HOST:PORT`` (repeatable) it needs no
cluster: the named services always route to those addresses, and nothing is woken.

On SIGTERM it stops accepting connections, answers held requests before ``--grace-period``
(25s) runs out, lets forwarded ones finish, and exits 0.
"""
