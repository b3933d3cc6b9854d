# zonechat entry points. `make up` runs the cluster in the foreground (Ctrl-C stops it);
# `make test` runs every test tier. Both build .venv first; the install step reruns only
# when pyproject.toml changed (stamp file), so it is quick once done.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   ?= .venv
CONFIG ?= config.yaml
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.zonechat-installed

.PHONY: venv up down status test clean-data

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

# pytest exits 5 when it collected nothing: that is a failure too (make fails on any non-zero).
test: $(STAMP)
	@$(PY) -m pytest -q tests/; rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; fi; exit $$rc

clean-data:
	rm -rf data
