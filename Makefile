# The two commands a user needs: `make demo` and `make test`. Each sets itself up
# (Java 17 if missing, a virtualenv with the package) on a fresh machine.
#
# Two pyspark lines are supported and tested, each in its own virtualenv:
#   PYSPARK_VERSION=4   (default) the latest pyspark 4.x   -> .venv
#   PYSPARK_VERSION=3.5           the latest pyspark 3.5.x -> .venv-pyspark3.5
# e.g. `PYSPARK_VERSION=3.5 make demo`.
PYTHON ?= python3
PYSPARK_VERSION ?= 4
ifeq ($(PYSPARK_VERSION),4)
VENV ?= .venv
PYSPARK_PIN := pyspark>=4,<5
else ifeq ($(PYSPARK_VERSION),3.5)
VENV ?= .venv-pyspark3.5
PYSPARK_PIN := pyspark>=3.5,<3.6
else
$(error PYSPARK_VERSION=$(PYSPARK_VERSION) is not tested: use 4 or 3.5)
endif
PY := $(VENV)/bin/python

.PHONY: setup demo test suite unit lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	./.ci/ensure_java.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' '$(PYSPARK_PIN)'
	touch $@

demo: setup
	$(PY) -m ray_on_spark.demo

# The lint, then every test on pyspark 4: tests/unit first (no Spark, no Ray; seconds), the
# multi-host rig's own tests (tests/multihost: Linux namespaces, needs root; seconds), then
# tests/integration (real clusters); then, on pyspark 3.5, the integration tests that depend on
# the pyspark version (all but those marked `any_spark`; see tests/conftest.py).
test: lint
	$(MAKE) --no-print-directory suite PYSPARK_VERSION=4 SUITE="tests/unit tests/multihost tests/integration"
	$(MAKE) --no-print-directory suite PYSPARK_VERSION=3.5 SUITE="tests/integration -m 'not any_spark'"

suite: setup
	@$(PY) -c "import pyspark; print('pyspark', pyspark.__version__, 'in $(VENV)')"
	$(PY) -m pytest $(SUITE) -v --durations=15

unit: setup
	$(PY) -m pytest tests/unit -q

lint: setup
	$(PY) -m ruff check .

bench: setup
	$(PY) benchmarks/startup.py --reps 5 --cpu-account
	$(PY) benchmarks/spark_on_ray.py --raydp --reps 3
	$(PY) benchmarks/convert.py --rows 10000000 --raydp

clean:
	rm -rf .venv .venv-pyspark3.5 *.egg-info .pytest_cache
