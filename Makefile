# Each target bootstraps .venv when it is missing or older than pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint clean faults soak

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check devicectl firmware_sim tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/devicectl demo

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/sim.py
	$(BIN)/python bench/controller.py
	$(BIN)/python bench/session.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/cpu.py
	$(BIN)/python bench/flight.py
	$(BIN)/python bench/auth.py

# The fault campaign: every fault kind at every phase, in virtual time; writes
# docs/fault-matrix.md and fails when a cell is unsafe, lost records or crashed.
faults: $(STAMP)
	$(BIN)/python -m firmware_sim.campaign

# The soak: the controller's hypothesis safety property for at least 10^6 steps
# (SOAK_STEPS=... to change); its figure goes in docs/performance.md.
soak: $(STAMP)
	$(BIN)/python -m pytest -q -s -m slow tests/test_soak.py

lint: $(STAMP)
	$(BIN)/ruff check devicectl firmware_sim tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
