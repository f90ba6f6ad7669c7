SHELL := /bin/bash
VENV := .venv
# Extra pytest arguments, e.g.  make test PYTEST_ARGS='-k harness -x'
PYTEST_ARGS ?=
# Hard limit for the whole pytest run (seconds); a hung FUSE read can only be ended by SIGKILL.
TEST_TIMEOUT ?= 1500

.PHONY: setup demo test mount clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/fakeproc demo

# Always clean the mounts the tests leave, and keep pytest's exit code. The tests get
# a temporary directory of their own (TMPDIR: pytest's, the harness's, the runner's
# fakeproc-run-* and the benchmark's), and only mounts below it are cleaned: a
# machine mounted elsewhere, such as mount/ or another user's `fakeproc run`, stays.
TMP := $(or $(TMPDIR),/tmp)
test: setup
	@root=$$(mktemp -d $(TMP)/fakeproc-make-test-XXXXXX) && rc=0; \
	TMPDIR=$$root timeout -s KILL $(TEST_TIMEOUT) $(VENV)/bin/python -m pytest $(PYTEST_ARGS) || rc=$$?; \
	bash scripts/cleanup-mounts.sh $$root || true; \
	rm -rf --one-file-system $$root; \
	exit $$rc

mount: setup
	$(VENV)/bin/fakeproc mount mount/ -f

clean:
	-bash scripts/cleanup-mounts.sh
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
	git clean -fdXq -- fakeproc tests  # ignored build products: *.so, generated C, __pycache__
