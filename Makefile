# zonechat entry points. `make up` runs the cluster in the foreground (Ctrl-C stops it);
# `make test` runs every test tier. Both build .venv first; the install step reruns only
# when pyproject.toml changed (stamp file), so it is quick once done.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
CONFIG ?= config.yaml
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.zonechat-installed

.PHONY: venv up down status chat admin tail test test-slow clean-data

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "$(VENV) runs Python < 3.11: remove it and install python3.11"; exit 1; }
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

up: $(STAMP)
	$(VENV)/bin/zonechat up -c $(CONFIG)

down: $(STAMP)
	$(VENV)/bin/zonechat down -c $(CONFIG)

status: $(STAMP)
	$(VENV)/bin/zonechat status -c $(CONFIG)

# The README's commands through make, without activating the venv:
#   make chat USER=alice [ARGS=--register]    make admin ARGS="broadcast hello"    make tail ARGS=-f
# USER must be given on the command line (the environment's USER is your login name).
chat: $(STAMP)
	@test "$(origin USER)" = "command line" || { echo "usage: make chat USER=NAME [ARGS=--register]"; exit 2; }
	$(VENV)/bin/zonechat chat -c $(CONFIG) $(USER) $(ARGS)

admin: $(STAMP)
	$(VENV)/bin/zonechat admin -c $(CONFIG) $(ARGS)

tail: $(STAMP)
	$(VENV)/bin/zonechat log tail -c $(CONFIG) $(ARGS)

# pytest exits 5 when it collected nothing: that is a failure too (make fails on any non-zero).
test: $(STAMP)
	@$(PY) -m pytest -q tests/; rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; fi; exit $$rc

# The long fault suite (tests/integration/test_fault_suite.py, minutes: every fault kind
# several times, table printed). `make test` leaves it out (pyproject.toml: -m "not slow").
# ZONECHAT_FAULT_SEED=N repeats a run's fault order. Then the DM, group and room suites
# again, each module's cluster on a Redis Cluster of its own (Debian's redis-server 7).
CLUSTER_SUITES := tests/integration/test_direct_messages.py tests/integration/test_dm_guarantees.py \
	tests/integration/test_groups.py tests/integration/test_rooms.py tests/integration/test_chat_features.py
test-slow: $(STAMP)
	$(PY) -m pytest -q -s -m slow tests/
	ZONECHAT_TEST_REDIS=cluster $(PY) -m pytest -q $(CLUSTER_SUITES)

clean-data:
	rm -rf data
