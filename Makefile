# The two commands a user needs: `make demo` and `make test`. Each sets itself up
# (Java 17 if missing, a virtualenv with the package) on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	./.ci/ensure_java.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(PY) -m ray_on_spark.demo

test: setup
	$(PY) -m pytest tests -v --durations=15

unit: setup
	$(PY) -m pytest tests/test_resources.py tests/test_options.py tests/test_ports.py tests/test_supervisor.py tests/test_autoscale_unit.py -q

bench: setup
	$(PY) benchmarks/startup.py
	$(PY) benchmarks/spark_on_ray.py --raydp --reps 3
	$(PY) benchmarks/convert.py --rows 10000000 --raydp

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
