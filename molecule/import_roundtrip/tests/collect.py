# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run on a fleet host as root by test_roundtrip.py: python3 -c <this file> RECORD_DIR USER...

Waits (up to 60 s) until every process of every USER's PM2 is online and its stand-in has recorded what it sees,
then prints one JSON document per user: the `pm2 jlist` text, dump.pm2, and per process the stand-in's record and
the /proc/<pid>/environ of the process PM2 started. The stand-in is that process or, for `script: npm`, one of
its descendants.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

PATH = '/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'


def pm2_jlist(user):
    home = '/home/%s/.pm2' % user
    argv = ['runuser', '-u', user, '--', 'env', '-i', 'PATH=' + PATH, 'PM2_HOME=' + home, 'PM2_DISCRETE_MODE=true',
            '/usr/local/bin/pm2', 'jlist']
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def environ(pid):
    try:
        with open('/proc/%d/environ' % pid, 'rb') as handle:
            raw = handle.read()
    except OSError:
        return None
    return dict(item.decode('utf-8', 'replace').partition('=')[::2] for item in raw.split(b'\0') if item)


def ancestors(pid):
    seen = []
    while pid > 1:
        try:
            with open('/proc/%d/stat' % pid) as handle:
                pid = int(handle.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        seen.append(pid)
    return seen


def snapshot(record_dir, user):
    text = pm2_jlist(user)
    procs = [p for p in json.loads(text) if not p['pm2_env'].get('pmx_module')]
    problems, found = [], {}
    for proc in procs:
        env = proc['pm2_env']
        instance = env.get('NODE_APP_INSTANCE', env.get('env', {}).get('NODE_APP_INSTANCE', 0))
        key = '%s:%s' % (proc['name'], instance)
        if env.get('status') != 'online' or not proc.get('pid'):
            problems.append([proc['name'], '%s is %s' % (key, env.get('status'))])
            continue
        path = os.path.join(record_dir, '%s.%s.%s.json' % (user, proc['name'], instance))
        try:
            with open(path) as handle:
                record = json.load(handle)
        except (OSError, ValueError):
            problems.append([proc['name'], '%s has no record' % key])
            continue
        if record['pid'] != proc['pid'] and proc['pid'] not in ancestors(record['pid']):
            problems.append([proc['name'], '%s: the record is of another process' % key])
            continue
        found[key] = {'pm_id': proc['pm_id'], 'record': record, 'environ': environ(proc['pid'])}
    dump = None
    if os.path.exists('/home/%s/.pm2/dump.pm2' % user):
        with open('/home/%s/.pm2/dump.pm2' % user) as handle:
            dump = handle.read()
    return {'jlist': text, 'dump': dump, 'processes': found, 'problems': problems}


def main(record_dir, users):
    deadline = time.time() + 60
    while True:
        result = dict((user, snapshot(record_dir, user)) for user in users)
        if time.time() > deadline or not any(r['problems'] for r in result.values()):
            break
        time.sleep(1)
    print(json.dumps(result))


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2:])
