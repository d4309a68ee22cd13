# Two commands for a fresh machine; each installs into .venv first when needed (no activation).
#   make run    install, then `dvc repro`: the whole pipeline on the built-in sample corpus
#   make test   install, then lint + the test suite (scripts/test.sh); PYTEST_ARGS="-m 'not slow'"
# The install reruns when pyproject.toml or scripts/install.sh change (or with `make install`).
# Environment knobs of scripts/install.sh pass through (PYTHON, TORCH_SPEC, TORCH_INDEX_URL,
# INSTALL_BROWSER=1 for the browser tests, INSTALL_POSTGRES=0 to skip PostgreSQL).
VENV := .venv
STAMP := $(VENV)/.installed$(if $(filter 1,$(INSTALL_BROWSER)),-browser)

.PHONY: run test install clean-venv

run: $(STAMP)
	$(VENV)/bin/dvc repro

test: $(STAMP)
	bash scripts/test.sh $(PYTEST_ARGS)

install:
	bash scripts/install.sh
	touch $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
