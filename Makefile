# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pinned in pyproject.toml; pip on this kind of machine takes them from local disk.
PIP_FLAGS ?=

.PHONY: demo test docs install install-test browser splice-data lint bench bench-gpu clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_FLAGS) -e .
	touch $@

# tests/plugin: the tests' own study runners, registered as any package's are (entry points)
$(VENV)/.installed-test: pyproject.toml tests/plugin/pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_FLAGS) -e '.[test]'
	$(BIN)/pip install $(PIP_FLAGS) --no-deps -e tests/plugin
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/hiddencost quickstart

# The report test opens the page in Debian's chromium; it is skipped (saying why) only where
# chromium cannot be installed (e.g. not root, no apt).
browser:
	@[ -x /usr/bin/chromium ] || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	  echo "chromium could not be installed: the report's browser test will be skipped"; }

# The splice-junction DNA task reads Debian's r-cran-mlbench (its test is skipped, saying why,
# where the package cannot be installed).
splice-data:
	@[ -f /usr/lib/R/site-library/mlbench/data/DNA.rda ] || { (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq r-cran-mlbench) >/dev/null 2>&1 || \
	  echo "r-cran-mlbench could not be installed: the splice data test will be skipped"; }

test: install-test browser splice-data
	$(BIN)/ruff check src tests benchmarks examples docs
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'pytest collected no tests: that is a failure here'; fi; exit $$rc

# The docs site (mkdocs.yml) into site/, warnings as errors; `make test` builds it too
# (tests/test_docs.py) and checks the reference covers every command and public function.
docs: install-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: install-test
	$(BIN)/python benchmarks/bench_training.py

# The GPU check (packed throughput, CUDA vs CPU); says "no CUDA device" and exits 0 without one.
bench-gpu: install-test
	$(BIN)/python benchmarks/bench_gpu.py

clean:
	rm -rf $(VENV) hiddencost-results runs site
