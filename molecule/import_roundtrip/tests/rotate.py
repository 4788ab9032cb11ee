# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run on the deployed host as root by test_roundtrip.py: python3 -c <this file> MARKER CONFIG...

For each logrotate file (/etc/logrotate.d/<app>, written by nodefleet.pm2.pm2_logrotate from the imported
pm2_logrotate_apps): reads the log paths of its first line, expands them, appends a line with MARKER to every live
log file (so that notifempty does not skip it), runs a real, forced `logrotate` with that file and a state file of
its own, and prints per config: logrotate's exit code and, per live file, whether <file>.1 now holds the marker and
whether the live file still does (copytruncate empties it).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys


def rotate(marker, config):
    with open(config) as handle:
        head = next(line for line in handle if line.strip() and not line.startswith('#'))
    patterns = head.rsplit('{', 1)[0].split()
    files = sorted({path for pattern in patterns for path in glob.glob(pattern) if os.path.isfile(path)})
    for path in files:
        with open(path, 'a') as handle:
            handle.write('%s %s\n' % (marker, os.path.basename(path)))
    proc = subprocess.run(['logrotate', '--force', '--state', '/run/roundtrip-logrotate.status', config],
                          capture_output=True, text=True, check=False)
    result = {}
    for path in files:
        rotated = path + '.1'
        with open(path) as handle:
            live = handle.read()
        old = open(rotated).read() if os.path.exists(rotated) else ''
        result[path] = {'rotated_has_marker': marker in old, 'live_has_marker': marker in live}
    return {'patterns': patterns, 'rc': proc.returncode, 'stderr': proc.stderr[-2000:], 'files': result}


if __name__ == '__main__':
    print(json.dumps({config: rotate(sys.argv[1], config) for config in sys.argv[2:]}))
