# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Deploy locks of one project on one host: one JSON file per app, <dir>/<project>.<app>.lock, created with O_EXCL so
two runs can never both hold it. A lock holds token, controller, user, pid, started and time (epoch seconds).

The watchdog (role pm2_watchdog) and the deploy read the same files: keep the name and the ``time`` key stable.
"""

from __future__ import annotations

import json
import os
import time


def lock_path(lock_dir: str, project: str, app: str) -> str:
    return os.path.join(lock_dir, '%s.%s.lock' % (project, app))


def read_lock(path: str):
    """The lock's JSON, {'unreadable': True} for a half-written file, None when there is no lock."""
    try:
        with open(path, encoding='utf-8') as handle:
            data = json.load(handle)
        return data if isinstance(data, dict) else {'unreadable': True}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {'unreadable': True}


def project_locks(lock_dir: str, project: str) -> dict:
    """app -> lock, for every lock file of the project (apps no longer in the inventory included)."""
    prefix = project + '.'
    try:
        names = os.listdir(lock_dir)
    except OSError:
        return {}
    locks = {}
    for name in sorted(names):
        if name.startswith(prefix) and name.endswith('.lock'):
            lock = read_lock(os.path.join(lock_dir, name))
            if lock is not None:
                locks[name[len(prefix):-len('.lock')]] = lock
    return locks


def is_stale(lock: dict, ttl: int, dead_tokens, now: float) -> bool:
    return lock.get('unreadable', False) or now - lock.get('time', 0) > ttl or lock.get('token') in dead_tokens


def take(lock_dir: str, project: str, apps: list[str], owner: dict, ttl: int, dead_tokens=(), now: float | None = None) -> dict:
    """All or nothing: every app's lock for this run's token, or none (the ones taken here are given back).

    Locks older than ttl, unreadable, or of a run known dead are taken over (stolen). Locks of this project held by
    another live run, also for apps not asked for (an app removed from the inventory), refuse the whole take.
    """
    now = time.time() if now is None else now
    token = owner['token']
    os.makedirs(lock_dir, mode=0o755, exist_ok=True)
    existing = project_locks(lock_dir, project)
    held, stolen = {}, {}
    for app, lock in existing.items():
        if lock.get('token') == token:
            continue
        if is_stale(lock, ttl, dead_tokens, now):
            stolen[app] = lock
        else:
            held[app] = lock
    if held:
        return {'taken': [], 'held': held, 'stolen': {}}
    for app in stolen:
        try:
            os.unlink(lock_path(lock_dir, project, app))
        except FileNotFoundError:
            pass
    taken = []
    lock = dict(owner, time=int(now))
    for app in apps:
        path = lock_path(lock_dir, project, app)
        if existing.get(app, {}).get('token') == token:
            taken.append(app)
            continue
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:  # another run won the race between our read and create
            held[app] = read_lock(path) or {'unreadable': True}
            release(lock_dir, project, token, taken)
            return {'taken': [], 'held': held, 'stolen': {}}
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            json.dump(lock, handle)
        taken.append(app)
    return {'taken': taken, 'held': {}, 'stolen': stolen}


def release(lock_dir: str, project: str, token: str, apps=None) -> list[str]:
    """Remove this run's locks of the project (of the given apps, or all of them); others' locks stay."""
    released = []
    for app, lock in project_locks(lock_dir, project).items():
        if lock.get('token') == token and (apps is None or app in apps):
            try:
                os.unlink(lock_path(lock_dir, project, app))
            except FileNotFoundError:
                continue
            released.append(app)
    return released
