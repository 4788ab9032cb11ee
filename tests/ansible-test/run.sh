#!/usr/bin/env bash
# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# ansible-test (sanity or units) of this checkout with the ansible-core of one venv:
#   tests/ansible-test/run.sh <venv> sanity|units [ansible-test options]
# ansible-test wants a real copy at ansible_collections/<ns>/<name>; it is made outside the work tree (inside it,
# git marks the copy ignored and ansible-test finds no targets), one per checkout and ansible-core version.
# ansible-test bootstraps pip in each of its venvs with a get-pip.py it downloads from a host outside the
# registries this project may use; it finds a cached copy first, so our stand-in (.ci/ansible-test-get-pip.py)
# is placed there under the name this ansible-test looks for.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
VENV=$1
COMMAND=$2
shift 2
BIN=$VENV/bin
if ls "$REPO"/tests/sanity/ignore-*.txt >/dev/null 2>&1; then echo "tests/sanity/ignore-*.txt must not exist" >&2; exit 1; fi
version=$("$BIN/python" -c 'import ansible.release; print(ansible.release.__version__)')
pip_version=$("$BIN/python" - <<'PY'
import re, ansible_test._internal.python_requirements as m
found = re.findall(r"^\s*pip='([0-9.]+)',", open(m.__file__).read(), re.M)
print(found[0] if found else '')
PY
)
[ -n "$pip_version" ] || { echo "cannot tell which pip ansible-test $version bootstraps" >&2; exit 1; }
mkdir -p "$HOME/.ansible/test/cache"
cp "$REPO/.ci/ansible-test-get-pip.py" "$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
copy=$HOME/.cache/nodefleet/ansible-test-$(basename "$REPO")-$version/ansible_collections/nodefleet/pm2
rm -rf "$copy" && mkdir -p "$copy"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$copy")
cd "$copy"
echo "ansible-test $COMMAND with ansible-core $version"
export PATH=$BIN:$PATH
if [ "$COMMAND" = units-coverage ]; then
  # units with coverage, then the line coverage of plugins/ (every file, also those no test imports)
  "$BIN/ansible-test" units --venv --python 3.11 --color no --coverage "$@"
  exec "$BIN/ansible-test" coverage report --venv --python 3.11 --color no --all --include 'plugins/*'
fi
exec "$BIN/ansible-test" "$COMMAND" --venv --python 3.11 --color no "$@"
