# Browser tests of the gateway's playground page (tests/e2e/test_playground.py). Included by the main
# Makefile.
#
#   make playground-deps   Debian's chromium + chromium-driver (apt, as root, only when missing) and the
#                          pinned selenium from tests/e2e/requirements-playground.txt into the venv
#   make playground-test   playground-deps, then the browser tests
#
# Without root (or apt-get) it only warns; the tests then skip and say why.

PLAYGROUND_APT     := chromium chromium-driver
PLAYGROUND_REQS    := tests/e2e/requirements-playground.txt
# The interpreter that runs pytest (tests/e2e/conftest.py passes its own when it installs).
PLAYGROUND_PYTHON  ?= .venv/bin/python

.PHONY: playground-deps playground-test

playground-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "warning: chromium/chromedriver missing; install '$(PLAYGROUND_APT)' as root (playground tests skip)"; \
	  exit 0; \
	fi; \
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(PLAYGROUND_APT)
	$(PLAYGROUND_PYTHON) -m pip install --quiet --disable-pip-version-check -r $(PLAYGROUND_REQS)

playground-test: playground-deps
	$(PLAYGROUND_PYTHON) -m pytest -q -m e2e tests/e2e/test_playground.py
