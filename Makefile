# Both targets run as root on a Debian 12 host; each sets up what it needs.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)/.build
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.build
PYTEST_ARGS ?=

.PHONY: setup test unit integration demo bench clean

setup:
	./scripts/setup-host.sh

test: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS) tests

unit: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS) tests/unit

integration: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS) tests/integration

demo: setup
	$(PY) scripts/demo.py
	$(VENV)/bin/ansible-playbook -i localhost, -c local -e ansible_python_interpreter=/usr/bin/python3 playbooks/demo.yml

bench: setup
	$(PY) bench/apply.py && $(PY) bench/changes.py && $(PY) bench/drivers.py && $(PY) bench/store.py && $(PY) bench/import.py && $(PY) bench/migrate.py --dir /dev/shm --pairs vfs:overlay2,overlay2:vfs,overlay2:btrfs

clean:
	rm -rf .build .pytest_cache
