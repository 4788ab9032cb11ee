# One entry point for everything that proves the collection. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        ?= $(CURDIR)/.venv
BIN         := $(VENV)/bin
BUILD       := $(CURDIR)/build
COLLECTIONS := $(BUILD)/collections
PYTHON      ?= python3
DEBIAN_DEPS := debootstrap systemd-container tinyproxy zstd iproute2 openssh-client git
SCENARIOS   ?= $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))
DEMO_FLEET  ?= demo
# The fleet of `make demo-test` (CI): the demo's own name unless NODEFLEET_FLEET_PREFIX keeps checkouts apart.
DEMO_TEST_FLEET ?= $(NODEFLEET_FLEET_PREFIX)demo
# ansible-core releases proven besides the pinned one (tests/requirements.txt), each the latest patch on PyPI:
# ansible-test sanity and units on each, the OLDEST_SCENARIOS and a demo deploy on the oldest.
CORE_VERSIONS := 2.16.19 2.17.14 2.18.19
CORE_OLDEST   := 2.16.19
CORE_PINNED   := $(shell sed -n 's/^ansible-core==//p' tests/requirements.txt)
OLDEST_SCENARIOS ?= pm2_app
OLDEST_JOBS = $(addsuffix @$(CORE_VENVS)/ansible-core-$(CORE_OLDEST)/bin,$(OLDEST_SCENARIOS))
# Scenarios at once: each waits on its hosts about half the time, so two fill the CI machine's 2 cores.
MOLECULE_JOBS ?= 2
# One venv per release, outside the checkout: every checkout and run on this machine reuses it.
CORE_VENVS    ?= $(HOME)/.cache/nodefleet/venvs
# Molecule and testinfra (their pins) go into the oldest release's venv only; ansible-compat excludes 2.17.
CORE_MOLECULE := $(shell grep -E '^(molecule|pytest|pytest-testinfra)==' tests/requirements.txt)
# Galaxy is out of reach here; community.general comes out of the Ansible community package on PyPI instead.
COMMUNITY_PACKAGE := ansible==12.3.0
COMMUNITY_GENERAL := $(COLLECTIONS)/ansible_collections/community/general/MANIFEST.json

export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_FORCE_COLOR := 0
export MOLECULE_GLOB := molecule/*/molecule.yml

.PHONY: bench-deploy bench-noop bench-watchdog help deps venv debian-deps collection-link lint prometheus-rules sanity units compat fleet-tests molecule \
        molecule-oldest molecule-all test demo demo-down demo-test guides-test

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

deps: venv debian-deps collection-link  ## Install everything the tests need (venv + Debian packages)

venv: $(VENV)/.installed
$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r tests/requirements.txt
	touch $@

debian-deps:
	@missing=""; for p in $(DEBIAN_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  pkill -x tinyproxy || true; \
	fi

collection-link: venv $(COMMUNITY_GENERAL)
	mkdir -p $(COLLECTIONS)/ansible_collections/nodefleet
	ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/nodefleet/pm2

$(COMMUNITY_GENERAL): | $(VENV)/.installed
	rm -rf $(BUILD)/wheels $(dir $(COMMUNITY_GENERAL))
	$(BIN)/pip download --quiet --no-deps --dest $(BUILD)/wheels "$(COMMUNITY_PACKAGE)"
	$(BIN)/python -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
	  [z.extract(m, sys.argv[2]) for m in z.namelist() if m.startswith("ansible_collections/community/general/")]' \
	  $(BUILD)/wheels/*.whl $(COLLECTIONS)
	test -f $@

core-venv-%:
	@mkdir -p $(CORE_VENVS); dir=$(CORE_VENVS)/ansible-core-$*; \
	  want="ansible-core==$* $(if $(filter $*,$(CORE_OLDEST)),$(CORE_MOLECULE))"; \
	  flock $(CORE_VENVS)/.lock bash -euc '[ "$$(cat "$$1/.installed" 2>/dev/null)" = "$$2" ] && exit 0; \
	    echo "Creating $$1 ($$2)"; rm -rf "$$1"; $(PYTHON) -m venv "$$1"; "$$1/bin/pip" install --quiet $$2; \
	    echo "$$2" > "$$1/.installed"' _ "$$dir" "$$want"

lint: deps  ## ansible-lint (production profile); role docs match their argument specs and defaults (tests/tools/role_docs.py)
	$(BIN)/ansible-lint --profile production
	$(BIN)/python tests/tools/role_docs.py --check

# promtool from Debian's prometheus package, unpacked into build/ (no Prometheus server installed or started here).
PROMTOOL    := $(BUILD)/promtool/usr/bin/promtool
$(PROMTOOL):
	rm -rf $(BUILD)/promtool && mkdir -p $(BUILD)/promtool/deb
	cd $(BUILD)/promtool/deb && { apt-get download prometheus 2>/dev/null || { apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb -x $(BUILD)/promtool/deb/prometheus_*.deb $(BUILD)/promtool
	test -x $@

prometheus-rules: deps $(PROMTOOL)  ## promtool: pm2_watchdog's alert rules (role defaults) + their unit tests, the scrape snippet
	rm -rf $(BUILD)/prometheus && mkdir -p $(BUILD)/prometheus
	$(BIN)/ansible localhost -c local -o -m ansible.builtin.template -e @roles/pm2_watchdog/defaults/main.yml \
	  -a "src=roles/pm2_watchdog/templates/pm2.rules.yml.j2 dest=$(BUILD)/prometheus/pm2.rules.yml mode=0644" >/dev/null
	$(BIN)/python -c 'import sys, yaml; print(yaml.safe_dump({"rule_files": ["pm2.rules.yml"], \
	  "scrape_configs": yaml.safe_load(open(sys.argv[1]))}))' roles/pm2_watchdog/files/prometheus/scrape-config.yml \
	  > $(BUILD)/prometheus/prometheus.yml
	$(PROMTOOL) check config $(BUILD)/prometheus/prometheus.yml
	cp tests/prometheus/pm2.rules.test.yml $(BUILD)/prometheus/
	$(PROMTOOL) test rules $(BUILD)/prometheus/pm2.rules.test.yml

sanity: deps  ## ansible-test sanity (no ignore entries)
	tests/ansible-test/run.sh $(VENV) sanity

units: deps  ## ansible-test units, then line coverage of plugins/ with floors that fail the run (tests/unit/coverage_floors.py)
	mkdir -p $(BUILD)
	tests/ansible-test/run.sh $(VENV) units-coverage | tee $(BUILD)/units-coverage.txt
	$(BIN)/python tests/unit/coverage_floors.py $(BUILD)/units-coverage.txt

compat: deps $(addprefix core-venv-,$(CORE_VERSIONS))  ## ansible-test sanity and units on each of CORE_VERSIONS
	@for v in $(CORE_VERSIONS); do \
	  tests/ansible-test/run.sh $(CORE_VENVS)/ansible-core-$$v sanity || exit 1; \
	  tests/ansible-test/run.sh $(CORE_VENVS)/ansible-core-$$v units || exit 1; \
	done

fleet-tests: deps  ## the fleet tool itself (bad input, isolation, power, teardown)
	rc=0; $(BIN)/pytest -p no:cacheprovider tests/fleet || rc=$$?; \
	  if [ $$rc = 5 ]; then echo "fleet-tests: pytest collected no tests" >&2; exit 1; fi; exit $$rc

molecule: deps  ## every Molecule scenario (or SCENARIOS="a b"), MOLECULE_JOBS at once (tests/tools/molecule_lanes.py)
	$(BIN)/python tests/tools/molecule_lanes.py --jobs $(MOLECULE_JOBS) $(SCENARIOS)

molecule-oldest: deps core-venv-$(CORE_OLDEST)  ## the OLDEST_SCENARIOS with ansible-core CORE_OLDEST
	$(BIN)/python tests/tools/molecule_lanes.py --jobs $(MOLECULE_JOBS) $(OLDEST_JOBS)

molecule-all: deps core-venv-$(CORE_OLDEST)  ## molecule and molecule-oldest in the same lanes (what make test runs)
	$(BIN)/python tests/tools/molecule_lanes.py --jobs $(MOLECULE_JOBS) $(SCENARIOS) $(OLDEST_JOBS)

# In this order; `make test` prints the wall time of each (docs/ci.md keeps the figures and the budget). Suites joined
# by + run side by side, each one's output printed whole when it ends: compat is CPU alone, demo-test and guides-test
# bring up their own fresh fleets and check what a newcomer sees, not latencies.
TEST_SUITES := lint prometheus-rules sanity units fleet-tests molecule-all build-test compat+demo-test+guides-test

test: deps  ## Everything CI runs: the TEST_SUITES in order, each timed
	@times=""; t_all=$$(date +%s); for suite in $(TEST_SUITES); do t0=$$(date +%s); jobs=$$(echo "$$suite" | tr '+' ' '); \
	  n=$$(echo $$jobs | wc -w); side_by_side=""; [ $$n = 1 ] || side_by_side="-j$$n --output-sync=recurse"; \
	  $(MAKE) --no-print-directory $$side_by_side $$jobs || { echo "make test: $$suite FAILED"; exit 1; }; \
	  times="$$times\n  $$suite: $$(( $$(date +%s) - t0 )) s"; echo -e "=== make test: wall time so far:$$times"; done; \
	  echo -e "make test: all suites passed in $$(( $$(date +%s) - t_all )) s:$$times"

demo: deps  ## Bring up a local fleet (prod x3, staging, lb), deploy docs/example to it, print the status table
	$(PYTHON) tests/fleet/fleet.py --name $(DEMO_FLEET) up --reuse --subnet auto --host-names prod-h1,prod-h2,prod-h3,staging-h1,lb-h1 \
	  --group prod=prod-h1,prod-h2,prod-h3 --group staging=staging-h1 --group lb=lb-h1 --inventory $(BUILD)/demo-inventory.yml
	export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_VAULT_PASSWORD_FILE=$(CURDIR)/docs/example/vault-password.txt; \
	  inv="-i $(BUILD)/demo-inventory.yml -i docs/example/inventory"; \
	  src="-e pm2_deploy_source_path=$(CURDIR)/docs/example/app"; \
	  $(BIN)/ansible-playbook $$inv docs/example/site.yml && \
	  $(BIN)/ansible-playbook $$inv $$src nodefleet.pm2.deploy -l prod && \
	  $(BIN)/ansible-playbook $$inv $$src nodefleet.pm2.deploy -l staging && \
	  $(BIN)/ansible-playbook $$inv nodefleet.pm2.status -e pm2_deploy_status_json=$(BUILD)/demo-status.json
	@$(BIN)/python -c 'import sys, yaml; inv = yaml.safe_load(open(sys.argv[1]))["all"]; \
	  print("PM2 and watchdog metrics (node exporter textfile collector, docs/watchdog.md):"); \
	  [print("  curl -s http://%s:9100/metrics | grep ^nodefleet_pm2" % inv["hosts"][h]["ansible_host"]) \
	   for h in inv["hosts"] if h not in inv["children"]["lb"]["hosts"]]' $(BUILD)/demo-inventory.yml

demo-down:  ## Remove the demo fleet
	$(PYTHON) tests/fleet/fleet.py --name $(DEMO_FLEET) down --missing-ok

demo-test: deps core-venv-$(CORE_OLDEST)  ## make demo on a fresh fleet, checked on the hosts and through the LB; a new release with ansible-core CORE_OLDEST, checked again; down
	DEMO_FLEET=$(DEMO_TEST_FLEET) OLDEST_BIN=$(CORE_VENVS)/ansible-core-$(CORE_OLDEST)/bin tests/demo/run.sh

guides-test: deps  ## docs/quickstart.md (CORE_PINNED) and docs/migration.md (CORE_OLDEST) run as written, from outside the repo, each on a fresh fleet
	$(BIN)/python tests/guides/run.py docs/quickstart.md=$(CORE_PINNED) docs/migration.md=$(CORE_OLDEST)

bench-deploy: deps collection-link  ## Benchmark: deploy/rollback/status vs ping, batch overhead, 3 vs 12 hosts under load (docs/benchmarks.md)
	$(BIN)/python tests/benchmarks/deploy_scale.py

bench-watchdog: deps collection-link  ## Benchmark: watchdog heal times, CPU/memory per host, scenario wall time (docs/benchmarks.md)
	$(BIN)/python tests/benchmarks/watchdog_cost.py

bench-noop: deps collection-link  ## Benchmark: no-change pm2_app run vs ansible ping (writes docs/benchmarks.md)
	$(BIN)/python tests/benchmarks/noop_vs_ping.py

.PHONY: build-test
build-test: deps  ## Build the tarball, install it into a clean path, run a playbook with it on a 1-host fleet
	VENV=$(VENV) tests/build/run.sh
