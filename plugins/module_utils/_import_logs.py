# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_import: the ``pm2_logrotate_apps`` item of each app (pure). Its log files where PM2 writes them on a host
deployed by nodefleet.pm2.pm2_deploy, and the ``log_file_max_size`` / ``log_file_max_files`` keys some ecosystem
files carry (PM2 ignores them) as the role's ``size`` and ``rotate``."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional

Plan = Dict[str, Any]

# Keys some teams put into ecosystem files for log rotation; PM2 ignores them, nodefleet.pm2.pm2_logrotate does it.
LOGROTATE_KEYS = {'log_file_max_size': 'size', 'log_file_max_files': 'rotate'}
SIZE_RE = re.compile(r'^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$', re.IGNORECASE)
# What PM2 treats as "no log file" for out_file, error_file and log_file.
NO_LOG = ('NULL', '/dev/null')
# Where the pm2_deploy role puts a project (its default: /srv/<pm2_deploy_project>), as an expression that also works
# in plays without that role (pm2_logrotate in a site playbook).
DEPLOY_TO = '{{ pm2_deploy_to | default("/srv/" ~ (pm2_deploy_project | default("app"))) }}'
# pm2_deploy links these directories of every release to <pm2_deploy_to>/shared/ (pm2_deploy_shared_dirs' default).
SHARED_DIRS = ('logs', 'uploads', 'data')
# PM2's own log directory of the user that pm2_runtime creates (pm2_runtime_users' default home and PM2_HOME).
PM2_LOG_DIR = '/home/{{ pm2_deploy_user }}/.pm2/logs'
LOG_SUFFIX_RE = re.compile(r'-[0-9]+\.log$|\.log$')


def logrotate_value(key: str, value: Any) -> Any:
    """log_file_max_size -> logrotate's size (10M, 512k, 1G, bytes); log_file_max_files -> rotate (a count).

    Raises ValueError (no value in the message)."""
    if isinstance(value, bool):
        raise ValueError('expected %s' % ('a size like 100M' if key == 'log_file_max_size' else 'a whole number'))
    if key == 'log_file_max_files':
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or value < 0:
            raise ValueError('expected a whole number of files to keep')
        return value
    if isinstance(value, int) and value >= 0:
        return str(value)
    match = SIZE_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError('expected a size: a number with an optional K, M or G (like 100M or 100MB)')
    unit = match.group(2).lower()
    return match.group(1) + ('k' if unit == 'k' else unit.upper())


def _log_location(name: str, rel_cwd: str, path: str, plan: Plan) -> Optional[str]:
    """Where a log path of the file lands on a host deployed by pm2_deploy, or None (with a note) when unknown."""
    if path.startswith('~'):
        plan['notes'].append('%s: log file %s starts with ~: not rotated by pm2_logrotate (give an absolute path)' % (name, path))
        return None
    if os.path.isabs(path):
        return os.path.normpath(path)
    # pm2_app resolves a relative log path against the app's cwd, <pm2_deploy_to>/current[/<cwd>], as written.
    in_deploy_to = os.path.normpath(os.path.join('current', rel_cwd, path))
    if in_deploy_to == '..' or in_deploy_to.startswith('../'):
        plan['notes'].append('%s: log file %s lies outside pm2_deploy_to: not rotated by pm2_logrotate' % (name, path))
        return None
    parts = in_deploy_to.split('/')
    if parts[0] == 'current' and len(parts) > 2 and parts[1] in SHARED_DIRS:
        # The release's logs/ is a link to shared/logs: rotate the files where they really are.
        return '%s/shared/%s' % (DEPLOY_TO, '/'.join(parts[1:]))
    if parts[0] == 'current':
        plan['notes'].append('%s: log file %s is inside the release, not in a shared directory (%s): each release has its own, '
                             'and pm2_logrotate rotates the one of the current release' % (name, path, ', '.join(SHARED_DIRS)))
    return '%s/%s' % (DEPLOY_TO, in_deploy_to)


def _log_files(name: str, pm2: Dict[str, Any], rel_cwd: str, plan: Plan) -> tuple:
    """(PM2's default files the app leaves to it, the files it names), as patterns logrotate takes.

    PM2 writes <PM2_HOME>/logs/<name>-out.log and -error.log when the file gives no out_file / error_file, and a
    combined log only when log_file is given; without merge_logs, a path ending in .log gets -<pm_id> before the
    extension (x.log -> x-3.log, God.js of pm2 7.0.4), so the pattern x-[0-9]*.log is rotated instead.
    """
    merged = pm2.get('merge_logs') is True
    defaults: List[str] = []
    paths: List[str] = []
    for field, kind in (('out_file', 'out'), ('error_file', 'error'), ('log_file', None)):
        given = pm2.get(field)
        if given is None:
            if kind:
                defaults.append('%s/%s-%s.log' % (PM2_LOG_DIR, name, kind))
                if not merged:
                    defaults.append('%s/%s-%s-[0-9]*.log' % (PM2_LOG_DIR, name, kind))
            continue
        where = None if given in NO_LOG else _log_location(name, rel_cwd, given, plan)
        if where is not None and not merged and where.endswith('.log'):
            where = LOG_SUFFIX_RE.sub('-[0-9]*.log', where)
        if where is not None and where not in paths:
            paths.append(where)
    return defaults, paths


def logrotate_entry(name: str, pm2: Dict[str, Any], logs: Dict[str, Any], owners: Dict[str, str], plan: Plan) -> Optional[Dict[str, Any]]:
    """The pm2_logrotate_apps item of one app, or None when all its files are rotated with another app.

    logs: {'rel_cwd': the app's cwd in the release, 'size'/'rotate': from LOGROTATE_KEYS}; owners: {path: app} of
    the files earlier apps name (updated).
    """
    entry: Dict[str, Any] = {'name': name, 'user': '{{ pm2_deploy_user }}'}
    defaults, paths = _log_files(name, pm2, logs['rel_cwd'], plan)
    if paths:
        # Only PM2's default files: the role derives them itself (from the user's PM2_HOME); otherwise name them all.
        # logrotate refuses a file named by two configurations: a file shared by apps is rotated with the first.
        for path in paths:
            if path in owners:
                plan['notes'].append('%s: log file %s is also the log of %s: rotated with that app' % (name, path, owners[path]))
        entry['paths'] = defaults + [path for path in paths if path not in owners]
        owners.update((path, name) for path in paths if path not in owners)
        if not entry['paths']:
            return None
    for key in ('size', 'rotate'):
        if key in logs:
            entry[key] = logs[key]
    if logs.get('size') is not None or logs.get('rotate') is not None:
        plan['notes'].append('%s: %s imported into pm2_logrotate_apps (%s); PM2 itself ignores these keys' % (
            name, ' and '.join(k for k, v in LOGROTATE_KEYS.items() if v in logs),
            ', '.join('%s: %s' % (k, logs[k]) for k in ('size', 'rotate') if k in logs)))
    return entry
