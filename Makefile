# Two commands for a new user: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV ?= .venv
# The CPU build lies on this project's machines; users with a GPU may set TORCH=torch to get theirs,
# and TORCH_INDEX=URL takes torch from another package index (PyTorch's CPU-only one, say).
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PY := $(VENV)/bin/python

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian/Ubuntu run 'sudo apt-get install python3-venv'"; exit 1; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	$(PY) -m pip install -q -e ".[test]"
	@touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/mridenoise demo --output-dir demo_output

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_output
