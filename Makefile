# Kittiwake: `make run` starts a working development server, `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the end-to-end tests drive as real peers.
TEST_DEBS := swaks postfix curl openssl nsd fetchmail libmail-dkim-perl opendkim-tools msmtp isync mutt bsdutils

.PHONY: run test check venv test-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e '.[fast]'

run: venv
	$(BIN)/kittiwake serve

test-deps: $(BIN)/python
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi
	$(BIN)/pip install -q -e '.[fast,test,dev]'

test: test-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

check: test-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: test-deps
	$(BIN)/python bench/smtp_accept.py

clean:
	rm -rf $(VENV) kittiwake-data build *.egg-info
