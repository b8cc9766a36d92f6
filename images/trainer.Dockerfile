# The trainer image: what TrainingJob workers, compression pods and InferenceService replicas
# run (`torchrun ... python -m sparsam_trainer train`, `... compress`, `... serve`). The
# built-in tasks' data and the MiniLM encoder come inside the pip packages, so pods need no
# network at run time.
#   docker build -f images/trainer.Dockerfile -t ghcr.io/sparsam/sparsam-trainer:0.1.0 .
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator operator
COPY trainer trainer
# The versions `sparsam images build` installs too (sparsam.devcluster.images; a test checks).
COPY images/trainer.requirements.txt requirements.txt
RUN pip wheel --no-cache-dir --wheel-dir /wheels --constraint requirements.txt ".[trainer]"

FROM python:3.11.14-slim-bookworm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "sparsam[trainer]" \
    && rm -rf /wheels
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
USER 65532:65532
WORKDIR /tmp
CMD ["python", "-m", "sparsam_trainer", "--help"]
