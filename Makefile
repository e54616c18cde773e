# Postmesh developer entry points. `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
export POSTMESH_CACHE ?= $(HOME)/.cache/postmesh
UV := $(shell command -v uv 2>/dev/null || echo $(POSTMESH_CACHE)/uv/bin/uv)
SERVICES := common auth store smtp-edge delivery imap-gw pop3-gw cli

.PHONY: run test bootstrap docs proto proto-check lint typecheck unit integration infra bench helm-test clean

## run: the whole system on the embedded backends (state in .postmesh/), until Ctrl-C
run: bootstrap
	$(UV) run --frozen python -m postmesh.common.devrun

## test: lint, type checks, contract freshness, unit tests per service, integration tests
test: bootstrap infra proto-check lint typecheck unit helm-test integration

## bootstrap: uv (into the cache if missing) and the locked Python environment
bootstrap:
	@bash scripts/bootstrap.sh

## proto: regenerate the Python code of proto/ into services/common/src/postmesh/api
proto: bootstrap
	$(UV) run --frozen bash scripts/gen-proto.sh

proto-check:
	$(UV) run --frozen bash scripts/gen-proto.sh --check
	$(UV) run --frozen python scripts/gen-config-docs.py --check

## docs: regenerate docs/configuration.md from the settings classes
docs: bootstrap
	$(UV) run --frozen python scripts/gen-config-docs.py

lint:
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck:
	$(UV) run --frozen mypy services/*/src tests

## unit: each service's tests in its own package environment (catches undeclared imports)
unit:
	@for s in $(SERVICES); do \
	  echo "== unit tests: $$s"; \
	  $(UV) run --frozen --package postmesh-$$s pytest services/$$s -q -p no:cacheprovider || exit 1; \
	done

## infra: Kafka jars and the FerretDB binary into $(POSTMESH_CACHE) (once), plus peer tools
infra:
	bash scripts/infra/fetch-all.sh
	bash scripts/ensure-tools.sh

integration:
	$(UV) run --frozen pytest tests/integration -q -p no:cacheprovider

## helm-test: lint, render and schema-validate the chart (helm is built once into the cache)
helm-test:
	bash scripts/helm/ensure-helm.sh >/dev/null
	$(UV) run --frozen pytest tests/helm -q -p no:cacheprovider

bench: bootstrap infra
	$(UV) run --frozen python -m tests.bench

clean:
	rm -rf .postmesh
