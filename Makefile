# Each target bootstraps .venv when it is missing or older than pyproject.toml.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint clean faults soak compiled test-compiled bench-compiled

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

CORE_TESTS := tests/test_protocol.py tests/test_protocol_properties.py tests/test_signing.py \
	tests/test_columnar.py tests/test_coverage.py tests/test_controller.py \
	tests/test_controller_properties.py tests/test_safety.py tests/test_firmware.py \
	tests/test_physics.py tests/test_virtual_session.py

# The suite on every core (pytest-xdist), then the real-time tests (processes over
# pseudo-terminals, held to the pen's watchdog) one at a time, so that they never
# compete with the suite's own load: under 5 minutes on 2 cores.
test: $(STAMP)
	$(BIN)/ruff check devicectl firmware_sim tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n auto --dist loadgroup -m "not slow and not realtime"
	$(BIN)/python -m pytest -q -m "realtime and not slow"

demo: $(STAMP)
	$(BIN)/devicectl demo

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/columnar.py
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
# (SOAK_STEPS=... to change); its figure goes in docs/performance.md. Then issue 11's
# done-when: every shipped profile over 20 seeds (SOAK_SEEDS, SOAK_JOBS at once),
# every zone done and no cell over its maximum; its table goes in docs/profiles.md.
soak: $(STAMP)
	$(BIN)/python -m pytest -q -s -m slow tests/test_soak.py tests/test_dose_property.py \
		tests/test_dose_sessions.py
	$(BIN)/python bench/profiles_soak.py --seeds $(or $(SOAK_SEEDS),20) --jobs $(or $(SOAK_JOBS),2)

# Opt-in (issue 17 item 1): the sans-I/O core compiled with mypyc into build/compiled
# (a copy of the packages with the extension modules beside them; setup.py lists
# them). The pure-Python package stays the reference and what `make test` runs:
# compiling costs ~1 min 15 s wall on 2 cores, which a cold `make test` cannot
# afford under 5 minutes (docs/performance.md, "Round 5"). The build is cached by
# a stamp and redone only when a module of devicectl/ or firmware_sim/ changes;
# each use copies the rest (tests, subpackages, profiles) afresh.
COMPILED_DIR := build/compiled
COMPILED_STAMP := $(COMPILED_DIR)/.built
$(COMPILED_STAMP): $(STAMP) setup.py pyproject.toml $(wildcard devicectl/*.py firmware_sim/*.py)
	rm -rf $(COMPILED_DIR) && mkdir -p $(COMPILED_DIR)
	cp -r devicectl firmware_sim profiles tests docs setup.py pyproject.toml README.md $(COMPILED_DIR)/
	cd $(COMPILED_DIR) && DEVICECTL_COMPILE=1 $(CURDIR)/$(BIN)/python setup.py -q build_ext --inplace
	@ls $(COMPILED_DIR)/devicectl/*.so $(COMPILED_DIR)/firmware_sim/*.so 2>/dev/null \
		|| echo "nothing compiled: build/compiled is pure Python"
	@touch $@

compiled: $(COMPILED_STAMP)
	cp -r devicectl firmware_sim profiles tests docs $(COMPILED_DIR)/

# The core tests against the compiled build, and those of the compiled modules'
# other users (the checks, the plan crossing to the pen process, the simulated hand
# and wire); run inside it: `python -m` puts the working directory first on
# sys.path, which must be the compiled copy.
COMPILED_TESTS := $(CORE_TESTS) tests/test_controller_checks.py \
	tests/test_controller_checks_honest.py tests/test_controller_checks_sim.py \
	tests/test_plan.py tests/test_handpiece.py tests/test_virtual_wire.py \
	tests/test_intervals.py tests/test_dose_records.py tests/test_fault_matrix.py \
	tests/test_faults.py tests/test_misbehave.py tests/test_secure_session.py tests/test_secure_e2e.py \
	tests/test_pickling.py
test-compiled: compiled
	cd $(COMPILED_DIR) && $(CURDIR)/$(BIN)/python -m pytest -q -p no:cacheprovider \
		-n 2 --dist loadgroup -m "not slow and not realtime" $(COMPILED_TESTS)

# Controller step, simulator, codec and virtual session, pure Python then compiled,
# in one run.
bench-compiled: compiled
	$(BIN)/python bench/compiled.py

lint: $(STAMP)
	$(BIN)/ruff check devicectl firmware_sim tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build
