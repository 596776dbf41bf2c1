# Two commands do all the set-up on a fresh machine:
#   make report   create the environment and run the main job on the shipped data
#   make test     create the environment and run the test suite
VENV ?= .venv
PYTHON ?= $(shell .ci/find-python)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env report test test-fast bench bench-quick bench-report render-check clean-env

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.12 or newer is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

env: $(STAMP)

report: $(STAMP)
	$(BIN)/robustscope run data/multi-prompt-eval --format multi-prompt -o reports/multi-prompt-eval

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/bench_ingest_parquet.py
	$(BIN)/python benchmarks/bench_alternatives.py --cap-ratio 5.5
	$(BIN)/python benchmarks/bench_scaling.py
	$(BIN)/python benchmarks/bench_startup.py

bench-quick: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/bench_alternatives.py --quick --output-dir build/bench-quick
	$(BIN)/python benchmarks/bench_scaling.py --quick --output-dir build/bench-quick
	$(BIN)/python benchmarks/bench_startup.py --quick --output-dir build/bench-quick

render-check: $(STAMP)
	$(BIN)/python -m pytest tests/report/test_render_browser.py -rs
	$(BIN)/python benchmarks/screenshot_report.py

bench-report: $(STAMP)
	$(BIN)/python benchmarks/bench_report_large.py --tasks-per-model 3 --runs 3

clean-env:
	rm -rf $(VENV)
