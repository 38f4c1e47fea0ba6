# The README's two commands are `make demo` and `make test`; each installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on local disk here and installs in seconds; an unpinned torch would pull CUDA.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.knsd-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error

.PHONY: install test check lint demo bench bench-gpu image manifests clean a1111-suite

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The suite in parallel: test files are shared out between workers (pytest-xdist), each with its own ports,
# cache and temporary directories. PYTEST_WORKERS=0 runs it serially.
PYTEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check knsd tests loadtest
	$(BIN)/ruff format --check knsd tests loadtest
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

demo: install
	$(BIN)/python loadtest/demo.py

# The cold start of the full-size SD 1.5 single file first (it writes the 2.1 GB file into the knsd cache once).
bench: install
	$(BIN)/knsd bench --cold-start
	$(BIN)/python loadtest/bench_serve.py
	$(BIN)/python loadtest/bench_local.py
	$(BIN)/python loadtest/bench_loadtest.py
	$(BIN)/python loadtest/bench_simulate.py
	$(BIN)/python loadtest/bench_families.py
	$(BIN)/python loadtest/bench_addons.py
	$(BIN)/python loadtest/bench_a1111.py

# The GPU figures as JSON (< 8 minutes on one H100/H200); without CUDA the same code on the tiny models (CPU).
bench-gpu: install
	@$(BIN)/python loadtest/bench_gpu.py $(BENCH_GPU_ARGS)

# A1111 v1.10.1's own API test suite against `knsd serve --model tiny`, read from a local A1111 git mirror
# (A1111_MIRROR); never part of `make test` (the suite is AGPL and is not copied here).
a1111-suite: install
	$(BIN)/python loadtest/a1111_suite.py

image:
	@engine=$$(command -v podman || command -v docker); \
	if [ -z "$$engine" ]; then echo "make image: neither podman nor docker found" >&2; exit 1; fi; \
	$$engine build -f Containerfile -t knsd:latest .

# The example manifests; tests/test_render.py runs these same lines and fails when manifests/ disagrees.
manifests: install
	$(BIN)/knsd render --profile generic -o manifests/generic.yaml
	$(BIN)/knsd render --profile ack -o manifests/ack.yaml
	$(BIN)/knsd render --profile tke --qgpu-core 50 --qgpu-memory 8 -o manifests/tke.yaml
	$(BIN)/knsd render --model-pvc sd-models --model /models/v1-5-pruned-emaonly.safetensors --with-storage -o manifests/storage.yaml

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
