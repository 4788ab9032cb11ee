# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fail `make units` when line coverage (statements run / statements) falls below a floor.

Reads the text of `ansible-test coverage report --all --include 'plugins/*'`; exits 1 naming every file under its floor.
"""

from __future__ import annotations

import fnmatch
import sys

FLOORS = {
    'plugins/module_utils/_pm2_app.py': 85,
    'plugins/module_utils/_pm2_supervisor.py': 85,
    'plugins/module_utils/_systemd*.py': 85,
    'TOTAL': 90,
}


def line_coverage(report):
    """{path or TOTAL: percent of statements run} from the report's rows (Name Stmts Miss Branch BrPart Cover)."""
    rows = {}
    for line in report.splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1].isdigit() and parts[2].isdigit():
            statements, missed = int(parts[1]), int(parts[2])
            rows[parts[0]] = 100.0 * (statements - missed) / statements if statements else 100.0
    return rows


def main(path):
    with open(path) as handle:
        rows = line_coverage(handle.read())
    if 'TOTAL' not in rows:
        print('coverage floors: no TOTAL row in %s' % path)
        return 1
    below = []
    for pattern, floor in FLOORS.items():
        matched = [name for name in rows if fnmatch.fnmatch(name, pattern)]
        if not matched:
            below.append('%s: not in the report' % pattern)
        below.extend('%s: %.1f%% < %d%%' % (name, rows[name], floor) for name in matched if rows[name] < floor)
    for name, floor in FLOORS.items():
        print('coverage floor %-40s %d%%' % (name, floor))
    print('line coverage of plugins/: %.1f%%' % rows['TOTAL'])
    if below:
        print('coverage below its floor:\n  ' + '\n  '.join(below))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1]))
