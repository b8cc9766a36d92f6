# The operator image: `sparsam run` (charts/sparsam's Deployment passes the arguments).
#   docker build -f images/operator.Dockerfile -t ghcr.io/sparsam/sparsam-operator:0.1.0 .
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator operator
COPY trainer trainer
# The versions `sparsam images build` installs too (sparsam.devcluster.images; a test checks).
COPY images/operator.requirements.txt requirements.txt
# Wheels of sparsam and its base dependencies only (no torch: the operator never imports it).
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint requirements.txt .

FROM python:3.11.14-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels sparsam && rm -rf /wheels
# Pod Security "restricted": a numeric non-root user; the chart also sets runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["sparsam"]
CMD ["run"]
