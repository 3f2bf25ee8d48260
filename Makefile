# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3
# e.g. https://download.pytorch.org/whl/cpu: where PyPI's torch wheel is the CUDA build (Linux x86_64), its CPU build
TORCH_INDEX ?=
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: venv demo demo-live test test-fast bench bench-fleet clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-test.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -r requirements-test.txt
	$(BIN)/pip install -q --no-deps tsb-ad==1.5
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: venv
	$(BIN)/streamdet demo --config config/demo.yaml

# streamdet on this machine's own metrics: a real collectd (Debian: apt-get install collectd-core libyajl2
# stress-ng), a 2-minute baseline, training, the daemon on the live stream, a 30 s CPU load; four to five minutes.
demo-live: venv
	$(BIN)/streamdet demo-live --config config/demo-live.yaml

# The whole suite. It needs no download: without ../shared/data (or $$STREAMDET_DATA) only the tests of the real
# benchmark files skip, and -ra lists them. Two workers (pytest-xdist): most tests wait on a broker, a daemon or a
# server, not on the CPUs. The `alone` tests (a real agent's machine-wide CPU metrics) run afterwards by themselves.
WORKERS ?= 2
test: venv
	$(BIN)/python -m pytest -q -ra -n $(WORKERS) --dist worksteal -m "not alone" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -ra -m alone $(PYTEST_ARGS)

# Without the broker and Prometheus tests (markers kafka, prometheus).
test-fast: venv
	$(BIN)/python -m pytest -q -ra -n $(WORKERS) --dist worksteal -m "not kafka and not prometheus and not alone" $(PYTEST_ARGS)

bench: venv
	$(BIN)/python tools/bench_pipeline.py --config config/smd.yaml

# Latency at realistic fleet rates and the cost of per-entity bundles (tools/bench_fleet.py).
bench-fleet: venv
	$(BIN)/python tools/bench_fleet.py --config config/smd.yaml

clean:
	rm -rf $(VENV) artifacts .pytest_cache
