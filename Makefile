# The two commands a user needs: `make demo` and `make test`. Each sets itself up
# (Java 17 if missing, a virtualenv with the package) on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	./.ci/ensure_java.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(PY) -m ray_on_spark.demo

# The lint, then every test: tests/unit first (no Spark, no Ray; seconds), then tests/integration (real clusters).
test: lint
	$(PY) -m pytest tests/unit tests/integration -v --durations=15

unit: setup
	$(PY) -m pytest tests/unit -q

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/spark_on_ray.py --raydp --reps 3
	$(PY) benchmarks/convert.py --rows 10000000 --raydp

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
