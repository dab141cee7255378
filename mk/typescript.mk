# The TypeScript client (client/typescript). Included by the main Makefile (-include mk/*.mk); `make test`
# runs typescript-check before the pytest suite, whose tests/e2e/test_typescript_client.py runs the package's
# end-to-end tests against the real gateway and Triton.
#
#   make typescript-deps    npm ci from package-lock.json, only when the lock file changed
#   make typescript-check   deps, then `npm test`: the package build (dist/, ESM + declarations), the type
#                           check of sources and tests, and the unit and property tests (node --test)
#   make typescript-e2e     deps, then tests/e2e/test_typescript_client.py (pytest starts Triton and the gateway)

TS_DIR  := client/typescript
NPM     ?= npm
# Named by a hash of the lock file, inside node_modules: `npm ci` empties that folder, so an old stamp never
# survives a changed lock file, and an unchanged one skips the install.
TS_LOCK_KEY := $(shell cat $(TS_DIR)/package-lock.json 2>/dev/null | sha256sum | cut -c1-16)
TS_STAMP    := $(TS_DIR)/node_modules/.npm-ci-$(TS_LOCK_KEY)
TS_PYTEST   ?= .venv/bin/python -m pytest

.PHONY: typescript-deps typescript-check typescript-e2e

typescript-deps: $(TS_STAMP)

$(TS_STAMP):
	@command -v $(NPM) >/dev/null || { echo "error: npm not found; install Node.js 20+ with npm"; exit 1; }
	cd $(TS_DIR) && $(NPM) ci --no-audit --no-fund
	touch $@

typescript-check: typescript-deps
	@# `npm test` runs `npm run build` first (pretest: dist/, ESM + declarations), then compiles sources and
	@# tests with the strict tsconfig.json (the type check; test/package.test.ts imports the built package)
	@# and runs them with node --test.
	cd $(TS_DIR) && $(NPM) test

typescript-e2e: typescript-deps
	$(TS_PYTEST) -q -m e2e tests/e2e/test_typescript_client.py
