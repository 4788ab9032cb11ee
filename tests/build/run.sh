#!/usr/bin/env bash
# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Packaging test (make build-test): build the collection tarball, install it into an empty collections path, and
# use the INSTALLED copy from a directory outside the repository: pm2_import on the controller, pm2_app and
# pm2_info against a one-host fleet. Prints the build and install times. The fleet is removed even on failure.
#
# Environment: VENV (default <repo>/.venv), BUILD_TEST_FLEET (fleet name, default bt), BUILD_TEST_SUBNET
# (default 192.168.245.0/24, outside the 192.168.150-239 range the Molecule scenarios use), BUILD_TEST_KEEP=1 keeps
# the work directory.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${VENV:-$REPO/.venv}
BIN=$VENV/bin
FLEET=${BUILD_TEST_FLEET:-bt}
SUBNET=${BUILD_TEST_SUBNET:-192.168.245.0/24}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nodefleet-build-test.XXXXXX")
COMMUNITY=$REPO/build/collections/ansible_collections/community

now() { date +%s.%N; }
secs() { python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }

problems=""
cleanup() {
  rc=$?
  if [ $rc = 0 ] && [ -n "$problems" ]; then echo "build-test: failing because of: $problems" >&2; rc=1; fi
  python3 "$REPO/tests/fleet/fleet.py" --name "$FLEET" down --missing-ok >/dev/null 2>&1 || true
  if [ "${BUILD_TEST_KEEP:-0}" = 1 ]; then echo "build-test: kept $WORK"; else rm -rf "$WORK"; fi
  if [ $rc = 0 ]; then echo "build-test: PASSED"; else echo "build-test: FAILED (rc $rc)" >&2; fi
  exit $rc
}
trap cleanup EXIT

# 1. Build the working tree as it is (a clean copy would hide build_ignore gaps).
t0=$(now)
"$BIN/ansible-galaxy" collection build --output-path "$WORK/dist" "$REPO" >/dev/null
t1=$(now)
tarball=$(ls "$WORK"/dist/nodefleet-pm2-*.tar.gz)
tar -tzf "$tarball" > "$WORK/contents.txt"
echo "build-test: built $(basename "$tarball") ($(du -k "$tarball" | cut -f1) KiB, $(wc -l < "$WORK/contents.txt") entries) in $(secs "$t0" "$t1") s"

# 2. Nothing of the developer's machine in the tarball.
bad=$(grep -E '(^|/)(\.venv|\.cache|\.ci|\.config|\.pytest_cache|\.ansible|\.molecule|__pycache__|\.git)(/|$)|^build/|\.pyc$|^tests/output/' "$WORK/contents.txt" || true)
if [ -n "$bad" ]; then
  # Reported now, failed at the end, so that one run shows every problem.
  echo "build-test: the tarball holds files that galaxy.yml build_ignore should exclude:" >&2
  echo "$bad" | sed -E 's#^((\./)?[^/]+/?).*#  \1#' | sort -u >&2
  problems="build_ignore"
fi
for required in MANIFEST.json FILES.json meta/runtime.yml meta/execution-environment.yml plugins/modules/pm2_app.py \
                plugins/action/pm2_import.py plugins/module_utils/_ecosystem.py; do
  grep -qx "$required" "$WORK/contents.txt" || { echo "build-test: $required missing from the tarball" >&2; exit 1; }
done

# 3. The execution environment as meta/execution-environment.yml documents it (the image cannot be built here:
#    `ansible-builder create` writes the build context only), with the versions the suite tests.
mkdir -p "$WORK/ee-src/meta" "$WORK/ee-src/ee"
cp "$REPO/meta/execution-environment.yml" "$WORK/ee-src/meta/"
cp "$tarball" "$WORK/ee-src/ee/"
t_ee=$(now)
(cd "$WORK/ee-src" && "$BIN/ansible-builder" create -f meta/execution-environment.yml -c ee/context >/dev/null)
echo "build-test: ansible-builder create in $(secs "$t_ee" "$(now)") s"
context=$WORK/ee-src/ee/context
[ -f "$context/_build/collections/$(basename "$tarball")" ] || { echo "build-test: the EE context lacks the collection tarball" >&2; exit 1; }
[ "$(du -sk "$context" | cut -f1)" -lt 2048 ] || { echo "build-test: the EE context is $(du -sh "$context" | cut -f1): copied into itself?" >&2; exit 1; }
core_pin=$(sed -n 's/^ansible-core==//p' "$REPO/tests/requirements.txt")
grep -q "ansible-core==$core_pin" "$context"/[CD]*file || { echo "build-test: the EE does not pin ansible-core==$core_pin (tests/requirements.txt)" >&2; exit 1; }

# 4. Install into an empty collections path; community.general (used by the roles) from build/collections only.
mkdir -p "$WORK/extra/ansible_collections"
[ -d "$COMMUNITY" ] && ln -s "$COMMUNITY" "$WORK/extra/ansible_collections/community"
printf '[defaults]\nhost_key_checking = False\n[ssh_connection]\npipelining = True\n' > "$WORK/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH=$WORK/collections:$WORK/extra ANSIBLE_CONFIG=$WORK/ansible.cfg
export ANSIBLE_HOME=$WORK/.ansible ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
unset ANSIBLE_COLLECTIONS_PATHS ANSIBLE_ROLES_PATH
t2=$(now)
"$BIN/ansible-galaxy" collection install --no-deps -p "$WORK/collections" "$tarball" >/dev/null
t3=$(now)
echo "build-test: installed in $(secs "$t2" "$t3") s"
where=$("$BIN/ansible-galaxy" collection list nodefleet.pm2 --format json | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)))')
[ "$where" = "$WORK/collections/ansible_collections" ] || { echo "build-test: nodefleet.pm2 found in: $where" >&2; exit 1; }

# 5. A fleet of one host and a playbook run from outside the repository.
python3 "$REPO/tests/fleet/fleet.py" --name "$FLEET" down --missing-ok >/dev/null 2>&1 || true
t4=$(now)
python3 "$REPO/tests/fleet/fleet.py" --name "$FLEET" up --hosts 1 --subnet "$SUBNET" --inventory "$WORK/fleet.yml" >/dev/null
echo "build-test: fleet up in $(secs "$t4" "$(now)") s"
cp "$REPO/tests/build/playbook.yml" "$REPO/molecule/_shared/files/testapp.js" "$WORK/"
cp "$REPO/tests/unit/plugins/module_utils/fixtures/ecosystems/crm-backend.ecosystem.config.js" "$WORK/ecosystem.config.js"
printf 'build-test-vault-password\n' > "$WORK/vault-pass.txt"
cd "$WORK"
t5=$(now)
"$BIN/ansible-playbook" -i fleet.yml playbook.yml -e "work_dir=$WORK"
echo "build-test: playbook ran in $(secs "$t5" "$(now)") s"
