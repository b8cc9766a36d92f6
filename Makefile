# The two commands of the Quick start, and the checks CI runs.
#   make demo   a real dev cluster with GPU nodes, our CRDs, examples/ applied, `kubectl get`
#   make test   lint, types, layering, then every test (unit and integration)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint unit install binaries prometheus container-tools images clean
install: $(VENV)/.installed

# Reinstalled only when pyproject.toml changes; pip's own cache keeps re-runs fast.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,trainer]'
	touch $@

demo: install prometheus
	$(BIN)/sparsam demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install
	$(BIN)/python -m pytest tests/unit

# Built before pytest starts, so a cold build (~20 min, once) is not charged to a test's timeout.
binaries: install
	$(BIN)/sparsam dev-cluster build

# The model server's metrics are scraped by a real Prometheus in the tests: Debian's package.
prometheus:
	@command -v prometheus >/dev/null || { \
		echo "installing Debian's prometheus package (the tests and the demo start it on loopback)"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# sparsam's container images as OCI archives, without a Docker engine (docs/images.md): Debian's
# debootstrap makes the base, catatonit (downloaded, never installed) is the pause image, and
# skopeo copies an archive to a registry. Real nodes (`dev-cluster up --real-nodes N`) run
# containers with Debian's containerd, runc and CNI plugins. More apt packages go here.
container-tools:
	@command -v debootstrap >/dev/null && command -v skopeo >/dev/null \
		&& command -v containerd >/dev/null && command -v runc >/dev/null \
		&& test -x /usr/lib/cni/bridge || { \
		echo "installing Debian's debootstrap, skopeo, containerd, runc and CNI plugins"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends \
			debootstrap skopeo containerd runc containernetworking-plugins >/dev/null; }
	@apt-cache show catatonit >/dev/null 2>&1 || apt-get update -qq

# Which images `make images` builds: all by default; the tests need only pause, operator and
# trainer-cpu (trainer, with CUDA, is several GB).
IMAGES ?= pause operator trainer-cpu trainer
images: install container-tools
	$(BIN)/sparsam images build $(IMAGES)

# Each phase prints its time; pytest adds the 30 slowest tests and the time per test folder.
# Images are built before pytest starts, like the binaries, so a cold build is not charged to a
# test's timeout; the tests use pause, operator and trainer-cpu.
PHASE = .ci/phase
test:
	@$(PHASE) venv $(MAKE) --no-print-directory install
	@$(PHASE) lint $(MAKE) --no-print-directory lint
	@$(PHASE) binaries $(MAKE) --no-print-directory binaries
	@$(PHASE) system-packages $(MAKE) --no-print-directory prometheus container-tools
	@$(PHASE) images $(MAKE) --no-print-directory images IMAGES="pause operator trainer-cpu"
	@$(PHASE) pytest $(BIN)/python -m pytest --durations=30

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
