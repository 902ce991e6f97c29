# Two commands matter: `make demo` and `make test`. Both create the environment first if
# it is missing (Python >= 3.10 and make are all a machine needs).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out/demo
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt

PKG_META := packages/bfm-prep/pyproject.toml packages/stn-core/pyproject.toml \
            packages/stn-train/pyproject.toml constraints.txt requirements-dev.txt

.PHONY: env test lint detect-extra demo bench clean

env: $(STAMP)

$(STAMP): $(PKG_META)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 is needed; set PYTHON=...")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the environment into $(VENV) (about a minute) ..."
	$(PIP) torch
	$(PIP) -r requirements-dev.txt -e packages/stn-core -e packages/bfm-prep -e packages/stn-train
	@touch $(STAMP)

# One BLAS/OpenMP thread per test worker: two workers already fill two cores, and
# oversubscribed small linear algebra runs ten times slower.
test: $(STAMP)
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup -q

# The lint checks CI runs before the tests (configuration: [tool.ruff] in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The optional extra stn-train[detect] (dlib-bin, face-recognition-models: about 130 MB of
# binary wheels and models); not needed by make demo. CI installs it so its tests run.
detect-extra: $(STAMP)
	$(PIP) -e 'packages/stn-train[detect]'

demo: $(STAMP)
	OUT=$(OUT) BIN=$(BIN) bash tools/demo.sh

bench: $(STAMP)
	$(BIN)/python tools/bench_prep.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis .ruff_cache
