# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The release layout of one project on one host, and its activation history.

<path>/releases/<release id>   one directory per release, complete or absent (unpacked beside, then renamed)
<path>/current                 -> releases/<release id>, switched atomically (a new link renamed over the old one)
<path>/shared/                 directories linked into every release
<path>/.release-history        one JSON record per line: release, outcome, time, run, apps (the pm2_app items the
                               release ran with). Lines holding only a release id (older collection versions) read
                               as healthy activations.

Outcomes: ``activated`` (switched to and healthy), ``restored`` (put back, healthy, after a failed deploy),
``failed`` (its activation on this host failed), ``rolled_back`` (healthy here, undone because its batch failed).
The rollback target is the newest release whose newest record is healthy, other than the current one and still on
disk: the same rule on every host, so a release that failed anywhere in its batch is never chosen by default.
"""

from __future__ import annotations

import json
import os
import re
import time

HEALTHY = ('activated', 'restored')
OUTCOMES = HEALTHY + ('failed', 'rolled_back')
HISTORY_KEEP = 100
RELEASE_ID_CHARS = frozenset('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-')


class ReleaseError(Exception):
    """A release step that cannot be done; details go into the module's failure result."""

    def __init__(self, msg: str, **details):
        super().__init__(msg)
        self.details = details


def validate_release_id(release: str, field: str = 'release') -> str:
    if not release or release.startswith('.') or not set(release) <= RELEASE_ID_CHARS or len(release) > 128:
        raise ReleaseError('%s: %r is not a release id (letters, digits, ".", "_", "-"; not starting with ".")'
                           % (field, release), field=field)
    return release


# --------------------------------------------------------------------------- history (pure)

def parse_history(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith('{'):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line after a power cut: the record never completed
            if isinstance(record, dict) and record.get('release') and record.get('outcome') in OUTCOMES:
                records.append(record)
        else:
            records.append({'release': line, 'outcome': 'activated', 'legacy': True})
    return records


def format_record(release: str, outcome: str, run: str | None = None, apps: list | None = None,
                  now: float | None = None) -> str:
    record = {'release': release, 'outcome': outcome, 'time': int(now if now is not None else time.time())}
    if run:
        record['run'] = run
    if apps is not None:
        record['apps'] = apps
    return json.dumps(record, sort_keys=True, separators=(',', ':'))


def last_outcomes(history: list[dict]) -> dict:
    """release -> its newest record."""
    latest = {}
    for record in history:
        latest[record['release']] = record
    return latest


def rollback_target(history: list[dict], current: str, on_disk: list[str]) -> tuple[str, str]:
    """(release, why) of the rollback default, or ('', why not)."""
    latest = last_outcomes(history)
    skipped = []
    seen = set()
    for record in reversed(history):
        release = record['release']
        if release == current or release in seen:
            continue
        seen.add(release)
        outcome = latest[release]['outcome']
        if outcome not in HEALTHY:
            skipped.append('%s (%s)' % (release, outcome.replace('_', ' ')))
            continue
        if release not in on_disk:
            skipped.append('%s (no longer on disk)' % release)
            continue
        why = 'the last release that was healthy on this host before %s' % (current or 'now')
        if skipped:
            why += '; skipped ' + ', '.join(skipped)
        return release, why
    why = 'no release was healthy on this host before %s' % (current or 'now')
    if skipped:
        why += ' (' + ', '.join(skipped) + ')'
    return '', why


def recorded_apps(history: list[dict], release: str):
    """The pm2_app items of the newest healthy activation of release, or None (never recorded)."""
    for record in reversed(history):
        if record['release'] == release and record['outcome'] in HEALTHY and 'apps' in record:
            return record['apps']
    return None


def name_items(message: str, apps: list) -> str:
    """'apps[2].env_file: ...' -> 'apps[worker].env_file: ...' (the app's name instead of its index)."""
    def by_name(match):
        index = int(match.group(1))
        return 'apps[%s]' % apps[index]['name'] if index < len(apps) and apps[index].get('name') else match.group(0)
    return re.sub(r'\bapps\[(\d+)\]', by_name, message)


def process_dirs(apps: dict, names, cwd_of) -> dict:
    """app name -> sorted real directories its live processes run in (cwd_of(pid) -> path, '' when unknown).

    A process keeps the directory it started in: after a switch of current, a reload that did not reach every
    instance (Ctrl-C, power cut) leaves some of them in the old release while PM2's record says the new one."""
    found = {}
    for name in names:
        for instance in (apps.get(name) or {}).get('instances') or []:
            pid = instance.get('pid') or 0
            where = cwd_of(pid) if pid > 0 else ''
            if where:
                found.setdefault(name, set()).add(where)
    return dict((name, sorted(dirs)) for name, dirs in found.items())


def outside(dirs: dict, release_dir: str) -> dict:
    """The apps of process_dirs() with a process outside release_dir."""
    return dict((name, where) for name, where in dirs.items() if any(d != release_dir for d in where))


def releases_to_prune(on_disk: list[str], history: list[dict], current: str, keep: int) -> list[str]:
    """Release directories beyond the newest ``keep`` ones, healthy releases counted first; never current nor the
    rollback target. A release that failed makes room before one that ran healthy, so a string of bad releases
    never prunes the last good one (the target of the next rollback once the current release fails too)."""
    order = []
    for record in reversed(history):
        if record['release'] not in order:
            order.append(record['release'])
    latest = last_outcomes(history)
    healthy = [r for r in order if latest[r]['outcome'] in HEALTHY]
    failed = [r for r in order if r not in healthy]
    kept = set(healthy[:keep]) | set(failed[:max(0, keep - len(healthy))])
    kept.add(current)
    kept.add(rollback_target(history, current, on_disk)[0])
    # Releases never activated (shipped by a run that stopped before its batch) are the newest of all: keep them.
    kept.update(r for r in on_disk if r not in order)
    return sorted(r for r in on_disk if r not in kept)


# --------------------------------------------------------------------------- layout on disk

class ReleaseLayout:
    """Reads and changes <path>/{releases,current,shared,.release-history}."""

    def __init__(self, path: str):
        if not os.path.isabs(path):
            raise ReleaseError('path: %s is not an absolute path' % path, field='path')
        self.path = path.rstrip('/') or '/'
        self.releases_dir = os.path.join(self.path, 'releases')
        self.current_link = os.path.join(self.path, 'current')
        self.shared_dir = os.path.join(self.path, 'shared')
        self.history_path = os.path.join(self.path, '.release-history')

    def release_dir(self, release: str) -> str:
        return os.path.join(self.releases_dir, release)

    def release_of_dir(self, path: str) -> str:
        """The release id of a real directory under releases/, else the path itself."""
        parent, name = os.path.split(path.rstrip('/'))
        return name if parent == os.path.realpath(self.releases_dir) else path

    def current(self) -> str:
        """The release current points to ('' when there is no link or it points elsewhere)."""
        try:
            target = os.readlink(self.current_link)
        except OSError:
            return ''
        parent, name = os.path.split(target.rstrip('/'))
        return name if parent in ('releases', self.releases_dir) else ''

    def on_disk(self) -> list[str]:
        try:
            names = os.listdir(self.releases_dir)
        except OSError:
            return []
        return sorted(n for n in names if not n.startswith('.') and os.path.isdir(os.path.join(self.releases_dir, n)))

    def leftovers(self) -> list[str]:
        """Half-unpacked releases of interrupted runs (.<id>.partial)."""
        try:
            names = os.listdir(self.releases_dir)
        except OSError:
            return []
        return sorted(n for n in names if n.startswith('.') and n.endswith('.partial'))

    def history(self) -> list[dict]:
        try:
            with open(self.history_path, encoding='utf-8') as handle:
                return parse_history(handle.read())
        except OSError:
            return []

    def record(self, line: str) -> None:
        """Append one record; the file is rewritten (atomically) only to keep its last HISTORY_KEEP records."""
        with open(self.history_path, 'a', encoding='utf-8') as handle:
            handle.write(line + '\n')
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(self.history_path, 0o600)  # the records hold the apps' settings (env values that are not secret)
        with open(self.history_path, encoding='utf-8') as handle:
            lines = handle.read().splitlines()
        if len(lines) > HISTORY_KEEP * 2:
            atomic_write(self.history_path, '\n'.join(lines[-HISTORY_KEEP:]) + '\n', 0o600)

    def switch(self, release: str) -> None:
        """Point current at releases/<release>: a relative link created beside it, renamed over it."""
        tmp = self.current_link + '.tmp'
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(os.path.join('releases', release), tmp)
        os.rename(tmp, self.current_link)
        fsync_dir(self.path)

    def unset(self) -> None:
        if os.path.lexists(self.current_link):
            os.unlink(self.current_link)
            fsync_dir(self.path)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, content, mode: int, uid: int | None = None, gid: int | None = None) -> None:
    """Write beside the target, then rename over it: readers see the old or the new file, never half of one."""
    data = content.encode('utf-8') if isinstance(content, str) else content
    tmp = '%s.%d.tmp' % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if uid is not None:
            os.chown(tmp, uid, -1 if gid is None else gid)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
