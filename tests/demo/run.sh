#!/usr/bin/env bash
# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# make demo-test (CI): what a newcomer runs, `make demo`, on a fresh fleet; then the platform it deployed is checked
# on the hosts and through the load balancer (tests/demo/test_demo.py). Then a new release of the example app is
# deployed with the oldest supported ansible-core (OLDEST_BIN) and checked the same way. The fleet is taken down
# at the end, also on failure (DEMO_KEEP=1 keeps it). Prints the wall time of each step.
#
# Environment: DEMO_FLEET (fleet name, default demo), OLDEST_BIN (bin directory of the oldest ansible-core's venv).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
FLEET=${DEMO_FLEET:-demo}
OLDEST_BIN=${OLDEST_BIN:?the bin directory of the oldest ansible-core venv}
VENV=${VENV:-$REPO/.venv}
NEXT=$REPO/build/demo-app-next

step_start=0
step() { step_start=$(date +%s); echo "=== demo-test: $*"; }
took() { echo "=== demo-test: $1 took $(( $(date +%s) - step_start )) s"; }

cleanup() {
  rc=$?
  if [ "${DEMO_KEEP:-0}" != 1 ]; then make --no-print-directory demo-down DEMO_FLEET="$FLEET" >/dev/null || true; fi
  if [ $rc = 0 ]; then echo "demo-test: PASSED"; else echo "demo-test: FAILED (rc $rc)" >&2; fi
  exit $rc
}
trap cleanup EXIT

step "make demo on a fresh fleet"
make --no-print-directory demo-down DEMO_FLEET="$FLEET"
make --no-print-directory demo DEMO_FLEET="$FLEET"
took "make demo"

step "the deployed platform"
DEMO_FLEET=$FLEET "$VENV/bin/pytest" -p no:cacheprovider -q tests/demo
took "the checks"

# A new release: the example app with another version in release.json (the release id follows the content).
rm -rf "$NEXT" && cp -r docs/example/app "$NEXT"
python3 - "$NEXT/release.json" <<'PY'
import json, sys
release = json.load(open(sys.argv[1]))
release["version"] = release["version"] + "-next"
json.dump(release, open(sys.argv[1], "w"))
PY
version=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$NEXT/release.json")

step "a rolling deploy of release $version with $("$OLDEST_BIN/ansible" --version | head -1)"
export ANSIBLE_HOST_KEY_CHECKING=False ANSIBLE_VAULT_PASSWORD_FILE=$REPO/docs/example/vault-password.txt
for env in prod staging; do
  "$OLDEST_BIN/ansible-playbook" -i build/demo-inventory.yml -i docs/example/inventory -e "pm2_deploy_source_path=$NEXT" \
    nodefleet.pm2.deploy -l "$env"
done
took "the deploy"

step "the platform on release $version"
DEMO_FLEET=$FLEET DEMO_VERSION=$version "$VENV/bin/pytest" -p no:cacheprovider -q tests/demo
took "the checks"
