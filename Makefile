# One entry point for everything that proves the collection. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        ?= $(CURDIR)/.venv
BIN         := $(VENV)/bin
# ansible-test bootstraps pip in each of its venvs with a get-pip.py it downloads from a host outside the
# registries this project may use; it finds a cached copy first, so we place our stand-in there.
GET_PIP      = $(HOME)/.ansible/test/cache/get_pip_$(subst .,_,$(shell sed -n "s/^ *pip='\([0-9.]*\)',/\1/p" \
                 $(VENV)/lib/python3.11/site-packages/ansible_test/_internal/python_requirements.py 2>/dev/null)).py
BUILD       := $(CURDIR)/build
# ansible-test wants a real copy at ansible_collections/<ns>/<name>; Ansible and Molecule are happy with a link.
# Outside the work tree: inside it, git marks the copy ignored and ansible-test finds no targets.
TEST_COPY   ?= $(HOME)/.cache/nodefleet/ansible-test-$(notdir $(CURDIR))/ansible_collections/nodefleet/pm2
COLLECTIONS := $(BUILD)/collections
PYTHON      ?= python3
DEBIAN_DEPS := debootstrap systemd-container tinyproxy zstd iproute2 openssh-client git
SCENARIOS   ?= $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))
DEMO_FLEET  ?= demo
# Galaxy is out of reach here; community.general comes out of the Ansible community package on PyPI instead.
COMMUNITY_PACKAGE := ansible==12.3.0
COMMUNITY_GENERAL := $(COLLECTIONS)/ansible_collections/community/general/MANIFEST.json

export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_FORCE_COLOR := 0
export MOLECULE_GLOB := molecule/*/molecule.yml

.PHONY: bench-deploy bench-noop help deps venv debian-deps collection-link test-copy lint sanity units fleet-tests molecule test demo demo-down

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

test-copy: venv
	@test "$(GET_PIP)" != "$(HOME)/.ansible/test/cache/get_pip_.py" || { echo "cannot tell ansible-test's pip version" >&2; exit 1; }
	mkdir -p $(dir $(GET_PIP)) && cp .ci/ansible-test-get-pip.py $(GET_PIP)
	rm -rf $(TEST_COPY) && mkdir -p $(TEST_COPY)
	git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C $(TEST_COPY)

lint: deps  ## ansible-lint, production profile
	$(BIN)/ansible-lint --profile production

sanity: deps test-copy  ## ansible-test sanity (no ignore entries)
	@if ls tests/sanity/ignore-*.txt >/dev/null 2>&1; then echo "tests/sanity/ignore-*.txt must not exist" >&2; exit 1; fi
	cd $(TEST_COPY) && $(BIN)/ansible-test sanity --venv --python 3.11 --color no

units: deps test-copy  ## ansible-test units
	cd $(TEST_COPY) && $(BIN)/ansible-test units --venv --python 3.11 --color no

fleet-tests: deps  ## the fleet tool itself (bad input, isolation, power, teardown)
	rc=0; $(BIN)/pytest -p no:cacheprovider tests/fleet || rc=$$?; \
	  if [ $$rc = 5 ]; then echo "fleet-tests: pytest collected no tests" >&2; exit 1; fi; exit $$rc

molecule: deps  ## every Molecule scenario (or SCENARIOS="a b")
	@for s in $(SCENARIOS); do echo "=== molecule scenario $$s"; $(BIN)/molecule test -s $$s || exit 1; done

test: deps lint sanity units fleet-tests molecule build-test  ## Everything CI runs
	@echo "make test: all suites passed"

demo: deps  ## Bring up a local fleet (prod x3, staging, lb), deploy docs/example to it, print the status table
	$(PYTHON) tests/fleet/fleet.py --name $(DEMO_FLEET) up --host-names prod-h1,prod-h2,prod-h3,staging-h1,lb-h1 \
	  --group prod=prod-h1,prod-h2,prod-h3 --group staging=staging-h1 --group lb=lb-h1 --inventory $(BUILD)/demo-inventory.yml
	export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_VAULT_PASSWORD_FILE=$(CURDIR)/docs/example/vault-password.txt; \
	  inv="-i $(BUILD)/demo-inventory.yml -i docs/example/inventory"; \
	  src="-e pm2_deploy_source_path=$(CURDIR)/docs/example/app"; \
	  $(BIN)/ansible-playbook $$inv docs/example/site.yml && \
	  $(BIN)/ansible-playbook $$inv $$src nodefleet.pm2.deploy -l prod && \
	  $(BIN)/ansible-playbook $$inv $$src nodefleet.pm2.deploy -l staging && \
	  $(BIN)/ansible-playbook $$inv nodefleet.pm2.status -e pm2_deploy_status_json=$(BUILD)/demo-status.json

demo-down:  ## Remove the demo fleet
	$(PYTHON) tests/fleet/fleet.py --name $(DEMO_FLEET) down --missing-ok

bench-deploy: deps collection-link  ## Benchmark: deploy/rollback/status vs ping, batch overhead, 3 vs 12 hosts under load (docs/benchmarks.md)
	$(BIN)/python tests/benchmarks/deploy_scale.py

bench-noop: deps collection-link  ## Benchmark: no-change pm2_app run vs ansible ping (writes docs/benchmarks.md)
	$(BIN)/python tests/benchmarks/noop_vs_ping.py

.PHONY: build-test
build-test: deps  ## Build the tarball, install it into a clean path, run a playbook with it on a 1-host fleet
	VENV=$(VENV) tests/build/run.sh
