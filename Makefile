# Everything runs inside .venv, which these targets create on a fresh clone.
PY      := .venv/bin/python
PIP     := $(PY) -m pip
STAMP   := .venv/.installed
DOCS_STAMP := .venv/.docs-installed
# On machines without an NVIDIA GPU, pin the local CPU wheel first; a looser pin pulls a multi-GB CUDA build.
TORCH_PIN ?= $(shell command -v nvidia-smi >/dev/null 2>&1 || echo "torch==2.13.0")

.PHONY: install lint format test test-all test-numerics gpu-check demo bench docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q --upgrade pip
	$(if $(TORCH_PIN),$(PIP) install -q "$(TORCH_PIN)")
	$(PIP) install -q -e ".[test]"
	# LitData (the `stream` extra) for tests/lightning/test_streaming.py, without its torchvision
	# dependency, which would replace the pinned torch; litdata runs without it.
	$(PIP) install -q --no-deps "litdata>=0.2.50"
	$(PIP) install -q filelock boto3 requests tifffile obstore
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check lvqmln_torch lvqmln_jax_ref tests benchmarks examples
	$(PY) -m ruff format --check lvqmln_torch lvqmln_jax_ref tests benchmarks examples

format: $(STAMP)
	$(PY) -m ruff format lvqmln_torch lvqmln_jax_ref tests benchmarks examples
	$(PY) -m ruff check --fix lvqmln_torch lvqmln_jax_ref tests benchmarks examples

test: lint
	$(PY) -m pytest -q -p no:cacheprovider

test-all: lint
	$(PY) -m pytest -q -p no:cacheprovider -m "slow or not slow"

# The tests that compare results computed through different batch shapes, chunk sizes,
# engines, runtimes or processes, on one thread (BLAS blocks and rounds otherwise).
test-numerics: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
		$(PY) -m pytest -q -p no:cacheprovider -m "numerics and not slow"

# One prepared script for a machine with a GPU: prints one table, exits 1 on a failed check
# and 2 without CUDA (docs/multi-gpu.md).
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

demo: $(STAMP)
	$(PY) -m lvqmln_torch.demo

bench: $(STAMP)
	$(PY) benchmarks/run.py
	$(PY) benchmarks/scale.py
	# MNIST rows: MNIST=path/to/mnist.pkl.gz (or $$LVQMLN_MNIST); skipped with a message without it.
	$(PY) benchmarks/accuracy.py --write --mnist-estimator $(if $(MNIST),--mnist $(MNIST))
	$(PY) benchmarks/mnist_speed.py --write $(if $(MNIST),--mnist $(MNIST))
	$(PY) benchmarks/robustness.py --write
	$(PY) benchmarks/step_anatomy.py --write

# The documentation site (mkdocs.yml, docs/) into site/; --strict turns every warning into an error.
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PIP) install -q -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf .venv lightning_logs demo_output .pytest_cache .ruff_cache site
