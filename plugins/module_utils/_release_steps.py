# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_release: unpack a release, activate it (switch current + apply the apps through the pm2_app backend + health),
put back the last healthy one, or leave the host with no active release. One module call per step, so a deploy costs
one SSH round trip per step and host."""

from __future__ import annotations

import os
import pwd
import shutil
import time
import traceback

from ansible_collections.nodefleet.pm2.plugins.module_utils._health import probe_all
from ansible_collections.nodefleet.pm2.plugins.module_utils._deploy_apps import AppsError, apply_apps, read_apps
from ansible_collections.nodefleet.pm2.plugins.module_utils._deploy_lock import project_locks
from ansible_collections.nodefleet.pm2.plugins.module_utils._release_unpack import free_mb, unpack_release
from ansible_collections.nodefleet.pm2.plugins.module_utils._release import (
    HEALTHY,
    ReleaseError,
    ReleaseLayout,
    format_record,
    last_outcomes,
    name_items,
    outside,
    process_dirs,
    recorded_apps,
    releases_to_prune,
    rollback_target,
    validate_release_id,
)

SCOPE_KEYS = ('user', 'pm2_home', 'executable')
# Polls after stopping the apps of a failed first deploy: a crash-looping PM2 instance caught mid-restart by `pm2 stop`
# is started again by PM2 and keeps looping; such an app is deleted instead.
STOP_CHECKS = 3
STOP_CHECK_DELAY = 1.0


def process_cwd(pid: int) -> str:
    """The real directory a process runs in ('' when it is gone or cannot be read)."""
    try:
        path = os.readlink('/proc/%d/cwd' % pid)
    except OSError:
        return ''
    return path[:-len(' (deleted)')] if path.endswith(' (deleted)') else path


class ReleaseRun:
    """One pm2_release call: run() returns the result dict or raises ReleaseError (details in the failure)."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.check_mode = module.check_mode
        self.layout = ReleaseLayout(self.params['path'])
        self.changed = False
        self.seconds = {}
        self.result = {}
        self.behind = set()

    # ------------------------------------------------------------------ entry
    def run(self) -> dict:
        state = self.params['state']
        self.result.update(self.snapshot())
        if self.params['lock_dir'] and self.params['project']:
            self.result['locks'] = project_locks(self.params['lock_dir'], self.params['project'])
        getattr(self, '_' + state)()
        self.result['changed'] = self.changed
        self.result['seconds'] = dict((k, round(v, 2)) for k, v in self.seconds.items())
        return self.result

    def snapshot(self) -> dict:
        history = self.layout.history()
        current = self.layout.current()
        on_disk = self.layout.on_disk()
        target, why = rollback_target(history, current, on_disk)
        latest = last_outcomes(history)
        return dict(previous=current, current=current, on_disk=on_disk, leftovers=self.layout.leftovers(),
                    now=int(time.time()), free_mb=free_mb(self.layout.path),
                    current_outcome=latest[current]['outcome'] if current in latest else '',
                    rollback_target=target, rollback_reason=why,
                    history=[dict((k, r[k]) for k in ('release', 'outcome', 'time', 'run') if k in r) for r in history[-10:]])

    # ------------------------------------------------------------------ state=present
    def _present(self):
        release = validate_release_id(self.params['release'])
        self.result['release'] = release
        if release in self.result['on_disk']:
            return
        self.changed = True
        if self.check_mode:
            return
        started = time.time()
        unpack_release(self.module, self.layout, release)
        self.seconds['unpack'] = time.time() - started
        self.result['on_disk'] = self.layout.on_disk()

    # ------------------------------------------------------------------ state=active
    def _active(self):
        history = self.layout.history()
        current = self.result['current']
        release = self.params['release']
        if not release and self.params['rollback']:
            release, why = self.result['rollback_target'], self.result['rollback_reason']
            if not release:
                raise ReleaseError('release: nothing to roll back to on this host: %s' % why, field='release')
        release = validate_release_id(release)
        self.result['release'] = release
        apps, self.result['apps_from'] = self._apps_for(history, release)
        present = release in self.result['on_disk']
        self.result['present'] = present
        switching = release != current
        self.result['switched'] = switching
        self._find_processes_elsewhere(apps, release, current)
        if self.params['restore'] and current != release:
            self._mark_undone(history, current)
        if self.check_mode:
            planned = self._plan(apps, release, current)
            self.result['apps'] = self._explain(planned['apps'])
            self.changed = switching or any(a['actions'] for a in self.result['apps'])
            self._diff(current, release, planned.get('diff'))
            return
        if not present:
            raise ReleaseError('release: %s is not in %s' % (release, self.layout.releases_dir), field='release')
        if switching:
            self.layout.switch(release)
            self.changed = True
        self.result['current'] = release
        self._apply_and_check(apps, release)

    def _apps_for(self, history, release):
        """The apps to apply: what the release last ran healthy with when restoring or rolling back, else the input."""
        if self.params['restore'] or self.params['rollback']:
            recorded = recorded_apps(history, release)
            if recorded is not None:
                return recorded, 'history'
        if self.params['apps'] is None:
            raise ReleaseError('apps: needed (no record of what release %s ran with)' % release, field='apps')
        return self.params['apps'], 'input'

    def _find_processes_elsewhere(self, apps, release, current):
        """Apps with a process outside current's release (an interrupted reload, a resurrect after a power cut):
        reported in off_current; when this call keeps current, they are reloaded (PM2's record alone, one per app,
        may already name the release while some workers still run the old one)."""
        names = [a['name'] for a in apps if a.get('script') and a.get('state', 'started') in ('started', 'reloaded', 'restarted')]
        if not current or not names:
            return
        dirs = process_dirs(read_apps(self.module, self._scope()), names, process_cwd)
        off = outside(dirs, os.path.realpath(self.layout.release_dir(current)))
        self.result['off_current'] = dict((name, [self.layout.release_of_dir(d) for d in where]) for name, where in off.items())
        if release == current:
            self.behind = set(off)

    def _items(self, apps, release):
        """pm2_app items whose release marker names this release's directory, wherever current points now."""
        release_dir = self.layout.release_dir(release)
        items = []
        for item in apps:
            item = dict(item)
            if item.get('script') and item.get('state') != 'absent':
                item['release_path'] = release_dir
            if item['name'] in self.behind:
                item['state'] = 'reloaded'
            items.append(item)
        return items

    def _explain(self, planned):
        """The per-app results, with the reason of the reloads this module asked for."""
        for app in planned:
            if app['name'] in self.behind:
                where = ', '.join(self.result['off_current'][app['name']])
                app['reasons'] = [r for r in app.get('reasons') or [] if r != 'requested'] + ['processes on %s' % where]
        return planned

    def _scope(self) -> dict:
        return dict((k, self.params[k]) for k in SCOPE_KEYS)

    def _plan(self, apps, release, current):
        if current and os.path.isdir(self.layout.release_dir(current)):
            try:
                return apply_apps(self.module, self._scope(), self._items(apps, release), check_mode=True)
            except AppsError as exc:
                # pm2_app names an item by its index; the deploy's user knows the app by its name.
                details = dict(exc.details)
                if details.get('field'):
                    details['field'] = name_items(details['field'], apps)
                raise AppsError(name_items(str(exc), apps), **details)
        # First deploy: nothing runs from this layout yet, every app would start; check what can be checked.
        self._require_user()
        missing = [a for a in apps if a.get('env_file') and a.get('state') != 'absent' and not os.path.isfile(a['env_file'])]
        if missing:
            raise ReleaseError('app %s: env_file: %s does not exist or is not a file' % (missing[0]['name'], missing[0]['env_file']),
                               field='env_file', app=missing[0]['name'])
        return dict(apps=[dict(name=a['name'], action='none' if a.get('state') == 'absent' else 'start',
                               actions=[] if a.get('state') == 'absent' else ['start'], reasons=['first deploy'],
                               supervisor=a.get('supervisor', 'pm2'), state=a.get('state', 'started')) for a in apps])

    def _require_user(self):
        user = self.params['user']
        if user:
            try:
                pwd.getpwnam(user)
            except KeyError:
                raise ReleaseError('user: no such OS user: %s' % user, field='user')

    def _apply_and_check(self, apps, release):
        started = time.time()
        try:
            applied = apply_apps(self.module, self._scope(), self._items(apps, release), check_mode=False)
        except AppsError as exc:
            self.seconds['apply'] = time.time() - started
            self._record(release, 'failed', apps)
            raise ReleaseError('release %s: %s' % (release, exc), step='apply', **exc.details)
        self.seconds['apply'] = time.time() - started
        self.changed = self.changed or applied['changed']
        self.result['apps'] = self._explain(applied['apps'])
        if applied.get('strays'):
            self.result['strays'] = applied['strays']
        checks = self.params['health']
        started = time.time()
        health = probe_all(self.module, checks, attempts=self.params['health_attempts'], delay=self.params['health_delay'])
        self.seconds['health'] = time.time() - started
        self.result['health'] = health
        pending = sorted(name for name, h in health.items() if not h['healthy'])
        self.result['health_pending'] = pending
        if pending and self.params['health_final']:
            self._record(release, 'failed', apps)
            raise ReleaseError('release %s: health check failed: %s' % (
                release, '; '.join('%s: %s' % (n, health[n]['detail']) for n in pending)), step='health', failed_apps=pending)
        if pending:
            return  # the caller waits for these checks where the user can see it, then calls again
        if self.params['soak'] > 0:
            self._soak(apps, release, checks)
        latest = last_outcomes(self.layout.history()).get(release)
        outcome = 'restored' if self.params['restore'] else 'activated'
        if self.changed or latest is None or latest['outcome'] not in HEALTHY:
            self._record(release, outcome, apps)
            self.changed = True
        self._prune()

    def _soak(self, apps, release, checks):
        """Watch health and restarts for soak seconds after activation (a canary batch)."""
        started = time.time()
        baseline = self._restarts()
        while time.time() - started < self.params['soak']:
            time.sleep(1)
            health = probe_all(self.module, checks)
            sick = sorted(n for n, h in health.items() if not h['healthy'])
            grown = sorted(n for n, count in self._restarts().items() if count > baseline.get(n, count))
            if sick or grown:
                self._record(release, 'failed', apps)
                raise ReleaseError('release %s failed during the %ss canary soak: %s' % (
                    release, self.params['soak'],
                    '; '.join(['%s: %s' % (n, health[n]['detail']) for n in sick] + ['%s restarted' % n for n in grown])),
                    step='soak', failed_apps=sick + grown)
        self.seconds['soak'] = time.time() - started

    def _restarts(self):
        apps = read_apps(self.module, self._scope())
        return dict((name, sum(i['restarts'] for i in app['instances'])) for name, app in apps.items())

    def _mark_undone(self, history, current):
        """Restoring: record what happened to the release being left, once. Activated by this run (its batch failed
        elsewhere) -> rolled_back; no record of this run (it never became healthy) -> failed; failed already -> as is."""
        latest = last_outcomes(history).get(current)
        if not current or self.check_mode:
            return
        if latest and latest.get('run') == self.params['run']:
            if latest['outcome'] == 'activated':
                self._record(current, 'rolled_back', latest.get('apps'))
            return
        self._record(current, 'failed', None)

    def _record(self, release, outcome, apps):
        if self.check_mode:
            return
        self.layout.record(format_record(release, outcome, self.params['run'], apps))
        self.result.setdefault('recorded', []).append(dict(release=release, outcome=outcome))

    def _prune(self):
        keep = self.params['keep']
        if not keep:
            return
        history = self.layout.history()
        on_disk = self.layout.on_disk()
        doomed = releases_to_prune(on_disk, history, self.layout.current(), keep)
        doomed += self.layout.leftovers()
        for name in doomed:
            shutil.rmtree(self.layout.release_dir(name), ignore_errors=True)
        if doomed:
            self.changed = True
        self.result['pruned'] = doomed

    def _diff(self, current, release, apps_diff):
        if self.module._diff:
            before, after = dict(current=current or None), dict(current=release)
            if apps_diff:
                before['apps'], after['apps'] = apps_diff['before'], apps_diff['after']
            self.result['diff'] = dict(before=before, after=after, before_header='%s (current, apps)' % self.layout.path,
                                       after_header='%s (current, apps)' % self.layout.path)

    # ------------------------------------------------------------------ state=inactive
    def _inactive(self):
        """No active release (a first deploy failed): the listed apps stopped, current removed."""
        current = self.result['current']
        self.result['release'] = ''
        names = [a['name'] for a in (self.params['apps'] or [])]
        if self.params['restore']:
            self._mark_undone(self.layout.history(), current)
        live = read_apps(self.module, self._scope())
        running = [n for n in names if n in live and any(i['status'] != 'stopped' for i in live[n]['instances'])]
        self.result['stopped'] = running
        self.result['deleted'] = []
        self.changed = bool(running) or bool(current)
        if self.check_mode:
            return
        if running:
            try:
                apply_apps(self.module, self._scope(), [dict(name=n, state='stopped') for n in running], check_mode=False)
                stuck = self._still_running(running)
                self.result['deleted'] = stuck
                if stuck:
                    apply_apps(self.module, self._scope(), [dict(name=n, state='absent') for n in stuck], check_mode=False)
            except AppsError as exc:
                raise ReleaseError('stopping %s: %s' % (', '.join(running), exc), step='stop', **exc.details)
            left = self._still_running(running)
            if left:
                raise ReleaseError('stopping %s: %s still running after stop and delete' % (', '.join(running), ', '.join(left)),
                                   step='stop')
            self.result['stopped'] = [n for n in running if n not in self.result['deleted']]
        self.layout.unset()
        self.result['current'] = ''

    def _still_running(self, names):
        """Apps with a process that is not stopped, or whose restart count still grows, over STOP_CHECKS polls."""
        first, moving = None, set()
        for check in range(STOP_CHECKS):
            if check:
                time.sleep(STOP_CHECK_DELAY)
            live = read_apps(self.module, self._scope())
            counts = dict((n, sum(i['restarts'] for i in live[n]['instances'])) for n in names if n in live)
            first = counts if first is None else first
            moving.update(n for n in names if n in live and (
                any(i['status'] != 'stopped' for i in live[n]['instances']) or counts[n] != first.get(n, counts[n])))
        return sorted(moving)


def run_release(module) -> None:
    """Module edge: run one step, turn domain errors into fail_json."""
    step = ReleaseRun(module)
    try:
        result = step.run()
    except (ReleaseError, AppsError) as exc:
        failure = dict(step.result, step=module.params['state'])
        failure.update(getattr(exc, 'details', {}))
        # The apps backend's own 'changed' counts: a failed apply may have changed the host.
        failure.update(msg=str(exc), changed=step.changed or bool(failure.get('changed')), seconds=step.seconds)
        module.fail_json(**failure)
    except OSError as exc:
        module.fail_json(msg='%s: %s' % (module.params['path'], exc), exception=traceback.format_exc())
    module.exit_json(**result)


def run_release_info(module) -> None:
    """pm2_release_info: the layout, history, rollback target and locks of a project, and the apps running."""
    step = ReleaseRun(module)
    try:
        result = step.snapshot()
        if module.params['lock_dir'] and module.params['project']:
            result['locks'] = project_locks(module.params['lock_dir'], module.params['project'])
        result['apps'] = read_apps(module, step._scope())
        dirs = process_dirs(result['apps'], list(result['apps']), process_cwd)
        for name, app in result['apps'].items():
            app['running_releases'] = [step.layout.release_of_dir(d) for d in dirs.get(name, [])]
    except (ReleaseError, AppsError) as exc:
        module.fail_json(msg=str(exc), **getattr(exc, 'details', {}))
    except OSError as exc:
        module.fail_json(msg='%s: %s' % (module.params['path'], exc))
    module.exit_json(changed=False, **result)
