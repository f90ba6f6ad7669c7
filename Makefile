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

# Always clean the mounts the tests leave (only theirs: a machine the user mounted
# elsewhere, such as mount/, stays), and keep pytest's exit code.
TMP := $(or $(TMPDIR),/tmp)
TEST_MOUNT_ROOTS = $(TMP)/pytest-of-$$(id -un) $(TMP)/fakeproc-tests $(TMP)/fakeproc-run-* $(TMP)/fakeproc-bench-*
test: setup
	@rc=0; timeout -s KILL $(TEST_TIMEOUT) $(VENV)/bin/python -m pytest $(PYTEST_ARGS) || rc=$$?; \
	bash scripts/cleanup-mounts.sh $(TEST_MOUNT_ROOTS) || true; \
	exit $$rc

mount: setup
	$(VENV)/bin/fakeproc mount mount/ -f

clean:
	-bash scripts/cleanup-mounts.sh
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
	git clean -fdXq -- fakeproc tests  # ignored build products: *.so, generated C, __pycache__
