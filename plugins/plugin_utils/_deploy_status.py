# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The status playbook's fleet table: one row per host and app, from pm2_release_info."""

from __future__ import annotations

import os

COLUMNS = ('host', 'app', 'supervisor', 'online/desired', 'status', 'memory_mb', 'restarts', 'crash_restarts', 'release', 'current')


def _releases_of(app: dict) -> list[str]:
    """What the app's processes really run (pm2_release_info: each process's working directory); else PM2's cwd."""
    if app.get('running_releases'):
        return list(app['running_releases'])
    path = app.get('recorded_release') or app.get('release') or ''
    return [os.path.basename(path.rstrip('/'))] if path else []


def _row(host: str, name: str, app: dict, desired: int, current: str, locks: dict) -> dict:
    procs = app.get('instances') or []
    statuses = sorted(set(p['status'] for p in procs))
    releases = _releases_of(app)
    return {
        'host': host, 'app': name, 'supervisor': app.get('supervisor', '-'),
        'online': app.get('instances_online', 0), 'desired': desired,
        'status': ','.join(statuses) if statuses else 'absent',
        'memory_mb': round(sum(p.get('memory') or 0 for p in procs) / 1048576.0, 1),
        'restarts': sum(p.get('restarts') or 0 for p in procs),
        # Restarts PM2 did on its own (crashes, memory limit), not the reloads of deploys.
        'crash_restarts': sum(p.get('crash_restarts', p.get('unstable_restarts', 0)) or 0 for p in procs),
        'release': ','.join(releases) or '-', 'current': current or '-',
        'mismatch': bool(current and any(r != current for r in releases)),
        'locked': name in locks,
    }


def status_rows(host: str, inputs: dict, info: dict) -> list[dict]:
    """Apps of the project on this host: the ones it should run and the ones running anyway."""
    desired = {a['name']: a['instances'] for a in inputs['apps']}
    running = info.get('apps') or {}
    return [_row(host, name, running.get(name) or {}, desired.get(name, 0), info.get('current') or '', info.get('locks') or {})
            for name in (item['name'] for item in inputs['items']) if name in desired or name in running]


def status_table(rows: list[dict]) -> list[str]:
    table = [list(COLUMNS)]
    for r in rows:
        release = r['release'] + (' (current: %s)' % r['current'] if r['mismatch'] else '')
        table.append([r['host'], r['app'], r['supervisor'], '%s/%s' % (r['online'], r['desired']), r['status'],
                      str(r['memory_mb']), str(r['restarts']), str(r['crash_restarts']), release, r['current']])
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ['  '.join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in table]
    mismatched = sorted(set('%s/%s' % (r['host'], r['app']) for r in rows if r['mismatch']))
    if mismatched:
        lines.append('not running the release current points to: %s (a deploy reloads them)' % ', '.join(mismatched))
    locked = sorted(set(r['host'] for r in rows if r['locked']))
    if locked:
        lines.append('deploy locks held on: %s (a deploy runs, or one was interrupted)' % ', '.join(locked))
    return lines
