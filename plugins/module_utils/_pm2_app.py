# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Module lifecycle for pm2_app and pm2_info: argument specs, execute/result/diff, actions, readiness."""

from __future__ import annotations

import grp
import json
import os
import tempfile
import time
import traceback

from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import (
    ENV_PRELOAD_JS,
    MARKER_RELEASE,
    MARKER_SPEC,
    Pm2Error,
    Pm2Runner,
    SpecError,
    ecosystem_app,
    env_digest,
    normalise_app,
    plan_app,
    read_fingerprint,
    validate_name,
)
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd import (
    IGNORED as SYSTEMD_IGNORED,
    STATE_DIR as SYSTEMD_STATE_DIR,
    SystemdRunner,
    check_systemd_spec,
    instance_unit,
    plan_systemd_app,
    render_unit,
    state_path,
    unit_path,
)

SCOPE_ARGSPEC = dict(
    executable=dict(type='path'),
    pm2_home=dict(type='path'),
    user=dict(type='str'),
)

APP_OPTIONS = dict(
    name=dict(type='str'),
    state=dict(type='str', default='started', choices=['present', 'started', 'stopped', 'restarted', 'reloaded', 'absent']),
    supervisor=dict(type='str', default='pm2', choices=['pm2', 'systemd']),
    script=dict(type='str'),
    cwd=dict(type='path'),
    args=dict(type='list', elements='str'),
    interpreter=dict(type='str'),
    node_args=dict(type='list', elements='str'),
    instances=dict(type='raw'),
    exec_mode=dict(type='str', default='fork', choices=['fork', 'cluster']),
    autorestart=dict(type='bool'),
    watch=dict(type='raw'),
    ignore_watch=dict(type='list', elements='str'),
    watch_delay=dict(type='int'),
    max_memory_restart=dict(type='raw'),
    min_uptime=dict(type='raw'),
    max_restarts=dict(type='int'),
    restart_delay=dict(type='int'),
    exp_backoff_restart_delay=dict(type='int'),
    cron_restart=dict(type='str'),
    kill_timeout=dict(type='int'),
    wait_ready=dict(type='bool'),
    listen_timeout=dict(type='int'),
    out_file=dict(type='path'),
    error_file=dict(type='path'),
    log_file=dict(type='path'),
    log_date_format=dict(type='str'),
    merge_logs=dict(type='bool'),
    time=dict(type='bool'),
    namespace=dict(type='str'),
    env=dict(type='dict', no_log=False),
    env_file=dict(type='path', no_log=False),
    release_path=dict(type='path'),
    settle_time=dict(type='int'),
    ready_timeout=dict(type='int'),
)


def pm2_app_argument_spec():
    spec = dict(SCOPE_ARGSPEC)
    spec.update(APP_OPTIONS)
    spec.update(
        apps=dict(type='list', elements='dict', options=APP_OPTIONS),
        save=dict(type='bool', default=True),
    )
    return spec


def pm2_info_argument_spec():
    spec = dict(SCOPE_ARGSPEC)
    spec.update(name=dict(type='str'))
    return spec


POLL_INTERVAL = 0.25
LOG_TAIL_LINES = 20


def tail(path, lines=LOG_TAIL_LINES):
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            data = handle.read()
    except (IOError, OSError):
        return []
    return data.decode('utf-8', 'replace').splitlines()[-lines:]


class Pm2Module(object):
    """execute() runs _execute(), turns domain errors into fail_json and exits with result (+ diff)."""

    def __init__(self, module):
        self.module = module
        self.check_mode = module.check_mode
        self.changed = False
        self.runner = None
        self.systemd = None
        self.warnings = []

    def execute(self):
        try:
            self.runner = Pm2Runner(self.module, **dict((k, self.module.params[k]) for k in SCOPE_ARGSPEC))
            self.systemd = SystemdRunner(self.module)
            self._execute()
        except Pm2Error as exc:
            details = dict(exc.details)
            details['pm2_calls'] = self.runner.calls if self.runner else 0
            details.update(self._result())
            # A failure after an action still changed the host; say so.
            self.module.fail_json(msg=str(exc), changed=self.changed and not self.check_mode, **details)
        except Exception as exc:  # pylint: disable=broad-except
            self.module.fail_json(msg='unexpected error: %s' % exc, exception=traceback.format_exc())
        for warning in self.warnings:
            self.module.warn(warning)
        self.module.exit_json(**self.result)

    @property
    def result(self):
        result = self._result()
        result['changed'] = self.changed
        result['pm2_calls'] = self.runner.calls
        result['systemctl_calls'] = self.systemd.calls
        if self.module._diff:
            result['diff'] = self.diff()
        return result

    def _execute(self):
        raise NotImplementedError

    def _result(self):
        return {}

    def diff(self):
        return {}


class Pm2AppModule(Pm2Module):

    def __init__(self, module):
        super(Pm2AppModule, self).__init__(module)
        self.specs = []
        self.plans = []
        self.actual = {}
        self.digests = {}
        self.state_after = {}
        self.systemd_actual = {}
        self.unit_texts = {}
        self.pm2_touched = False
        self.applied_at = None

    # ----------------------------------------------------------- inputs
    def _items(self):
        params = self.module.params
        if params['apps'] is None:
            return [dict((k, params[k]) for k in APP_OPTIONS)]
        for key in APP_OPTIONS:
            if key not in ('state', 'exec_mode', 'supervisor') and params[key] is not None:
                raise SpecError(key, 'top-level app options cannot be combined with apps; set it per item')
        return params['apps']

    def _normalise(self):
        cpus = os.cpu_count() or 1
        specs, seen = [], set()
        for index, item in enumerate(self._items()):
            try:
                spec = normalise_app(item, cpus)
                if spec['supervisor'] == 'systemd' and spec['managed']:
                    self._systemd_spec(spec, item)
            except SpecError as exc:
                where = 'apps[%d].' % index if self.module.params['apps'] is not None else ''
                raise SpecError(where + exc.field, str(exc).split(': ', 1)[1])
            if spec['name'] in seen:
                raise SpecError('name', 'app %s is listed twice' % spec['name'])
            seen.add(spec['name'])
            specs.append(spec)
        return specs

    # ----------------------------------------------------------- files under $PM2_HOME/nodefleet
    @property
    def state_dir(self):
        return os.path.join(self.runner.pm2_home, 'nodefleet')

    def _own(self, path):
        if self.runner.switch_user:
            os.chown(path, self.runner.uid, self.runner.gid)

    def _ensure_state_dir(self):
        if not os.path.isdir(self.state_dir):
            os.makedirs(self.state_dir, 0o700)
        os.chmod(self.state_dir, 0o700)
        self._own(self.state_dir)

    def _digest_key(self, where, own):
        """The HMAC key of env-file digests in <where>: the PM2 user's state dir, or root's for systemd apps."""
        path = os.path.join(where, 'digest.key')
        if os.path.exists(path):
            with open(path, 'rb') as handle:
                return handle.read()
        if self.check_mode:
            return None
        if own:
            self._ensure_state_dir()
        elif not os.path.isdir(where):
            os.makedirs(where, 0o700)
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'wb') as handle:
            handle.write(key)
        if own:
            self._own(path)
        return key

    @property
    def preload_path(self):
        return os.path.join(self.state_dir, 'env-preload.cjs')

    def _ensure_preload(self):
        content = ENV_PRELOAD_JS.encode('utf-8')
        try:
            with open(self.preload_path, 'rb') as handle:
                if handle.read() == content:
                    return False
        except (IOError, OSError):
            pass
        if self.check_mode:
            return True
        self._ensure_state_dir()
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix='.preload-')
        with os.fdopen(fd, 'wb') as handle:
            handle.write(content)
        os.chmod(tmp, 0o644)
        self._own(tmp)
        os.rename(tmp, self.preload_path)
        return True

    def _write_ecosystem(self, specs):
        self._ensure_state_dir()
        apps = [ecosystem_app(s, self.digests.get(s['name']), self.preload_path) for s in specs]
        fd, path = tempfile.mkstemp(dir=self.state_dir, prefix='ecosystem-', suffix='.json')
        with os.fdopen(fd, 'w') as handle:
            json.dump({'apps': apps}, handle)
        os.chmod(path, 0o600)
        self._own(path)
        return path

    # ----------------------------------------------------------- systemd apps
    def _systemd_spec(self, spec, item):
        """Validate a systemd app and resolve what its unit runs (interpreter and script as absolute paths)."""
        ignored = check_systemd_spec(spec, item)
        if ignored:
            self.warnings.append('app %s: supervisor systemd ignores %s' % (spec['name'], ', '.join(ignored)))
        spec['fingerprint'] = dict((k, v) for k, v in spec['fingerprint'].items() if k not in SYSTEMD_IGNORED)
        pm2 = spec['pm2']
        script = pm2['script']
        if not os.path.isabs(script):
            found = self.module.get_bin_path(script)
            if not found and spec['state'] != 'absent':
                raise SpecError('script', '%s is neither a path nor a command in PATH' % script)
            script = found or script
        interpreter = pm2['interpreter']
        if interpreter == 'none' or (interpreter is None and not script.endswith(('.js', '.cjs', '.mjs'))
                                     and os.access(script, os.X_OK)):
            interpreter_path = None
        else:
            # node usually sits next to pm2 (nvm, npm prefix), as for the PM2 runner.
            opt_dirs = [os.path.dirname(self.runner.pm2)] if self.runner.pm2 else []
            wanted = interpreter or 'node'
            interpreter_path = wanted if os.path.isabs(wanted) else self.module.get_bin_path(wanted, opt_dirs=opt_dirs)
            if not interpreter_path and spec['state'] != 'absent':
                raise SpecError('interpreter', '%s not found in PATH' % wanted)
        spec['systemd'] = dict(interpreter=interpreter_path, script=script)

    def _unit_text(self, spec):
        account = self.runner
        if account.uid == 0:
            raise SpecError('user', 'systemd apps run as a dedicated user, not root; set user')
        group = grp.getgrgid(account.gid).gr_name
        return render_unit(spec, account.user, group, spec['systemd']['interpreter'], spec['systemd']['script'])

    def _write_unit(self, spec, text):
        path = unit_path(spec['name'])
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.nodefleet-')
        with os.fdopen(fd, 'w') as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
        self.systemd.run('daemon-reload')

    def _write_systemd_state(self, name, env_digest_value):
        if not os.path.isdir(SYSTEMD_STATE_DIR):
            os.makedirs(SYSTEMD_STATE_DIR, 0o700)
        fd, tmp = tempfile.mkstemp(dir=SYSTEMD_STATE_DIR, prefix='.state-')
        with os.fdopen(fd, 'w') as handle:
            json.dump({'env_digest': env_digest_value}, handle)
        os.rename(tmp, state_path(name))

    def _systemd_remove(self, name):
        """Stop, disable and forget every instance of the app's unit (switch away or absent)."""
        app = self.systemd_actual.get(name)
        units = [instance_unit(name, i['pm_id']) for i in (app['instances'] if app else [])]
        if units:
            self.systemd.run('disable', '--now', '--', *units)
            # A crash-looped instance stays listed as failed until reset; units already unloaded need nothing.
            self.systemd.try_run('reset-failed', '--', *units)
        for path in (unit_path(name), state_path(name)):
            if os.path.exists(path):
                os.unlink(path)
        self.systemd.run('daemon-reload')

    def _run_systemd_actions(self, spec, actions):
        """Run one systemd app's actions; returns True when its instances were (re)started."""
        name = spec['name']
        app = self.systemd_actual.get(name)
        known = set(i['pm_id'] for i in (app['instances'] if app else []))
        wanted = set(range(spec.get('instances') or len(known) or 1))
        extra = sorted(known - wanted)
        started = False
        for action in actions:
            if action == 'switch':
                # Out of PM2 before systemd starts it: the two never run the app at once.
                self.runner.run('delete', name)
                self.pm2_touched = True
            elif action == 'install':
                self._write_unit(spec, self.unit_texts[name])
            elif action in ('start', 'restart', 'scale'):
                units = [instance_unit(name, i) for i in sorted(wanted)]
                # A unit that hit its start limit refuses to start until its failed state is reset.
                self.systemd.try_run('reset-failed', '--', *units)
                if action == 'restart':
                    self.systemd.run('restart', '--', *units)
                self.systemd.run('enable', '--now', '--', *units)
                if extra:
                    self.systemd.run('disable', '--now', '--', *[instance_unit(name, i) for i in extra])
                started = True
            elif action == 'stop':
                self.systemd.run('disable', '--now', '--', *[instance_unit(name, i) for i in sorted(known | wanted)])
        return started

    def _delete_everywhere(self, name):
        if name in self.actual:
            self.runner.run('delete', name)
            self.pm2_touched = True
        if name in self.systemd_actual:
            self._systemd_remove(name)

    # ----------------------------------------------------------- main flow
    def _execute(self):
        self.specs = self._normalise()
        uses_pm2 = any(s['supervisor'] == 'pm2' and s['state'] != 'absent' for s in self.specs)
        self.actual = self.runner.jlist(spawn=uses_pm2 and not self.module.check_mode)
        namespaces = set(a['namespace'] for a in self.actual.values())
        namespaces.update(s['pm2']['namespace'] for s in self.specs if s['managed'] and s['pm2']['namespace'])
        for spec in self.specs:
            if spec['name'] in namespaces:
                raise SpecError('name', '%s is also a namespace; PM2 would act on the whole namespace' % spec['name'])

        # systemd is asked only about apps it may hold: systemd ones and PM2 ones that may be switching back.
        with_units = [s['name'] for s in self.specs if s['supervisor'] == 'systemd' or os.path.exists(unit_path(s['name']))]
        if any(s['supervisor'] == 'systemd' for s in self.specs):
            self.systemd.require()
        self.systemd_actual = self.systemd.apps(with_units) if with_units else {}
        for spec in self.specs:
            if spec['supervisor'] == 'systemd' and spec['managed'] and spec['state'] != 'absent':
                self.unit_texts[spec['name']] = self._unit_text(spec)

        with_env_file = [s for s in self.specs if s['managed'] and s['env_file'] and s['state'] != 'absent']
        if with_env_file:
            keys = {}
            for spec in with_env_file:
                where = SYSTEMD_STATE_DIR if spec['supervisor'] == 'systemd' else self.state_dir
                if where not in keys:
                    keys[where] = self._digest_key(where, own=where == self.state_dir)
                with open(spec['env_file'], 'rb') as handle:
                    content = handle.read()
                self.digests[spec['name']] = env_digest(keys[where], content) if keys[where] else None

        # Plan everything before the first mutation: a refusal or bad input changes nothing.
        self.plans = [self._plan(s) for s in self.specs]
        if any(s['supervisor'] == 'pm2' for s in with_env_file) and self._ensure_preload():
            self.changed = True
        if any(p['actions'] for p in self.plans):
            self.changed = True
        if self.check_mode or not any(p['actions'] for p in self.plans):
            return
        self._apply()

    def _plan(self, spec):
        name = spec['name']
        if spec['state'] == 'absent':
            # Gone from whichever supervisor has it.
            found = name in self.actual or name in self.systemd_actual
            return {'name': name, 'actions': ['delete'] if found else [], 'reasons': []}
        if not spec['managed'] and name in self.systemd_actual and name not in self.actual:
            # By name only: act on the app where it lives, never move it.
            spec['supervisor'] = 'systemd'
        if spec['supervisor'] == 'systemd':
            return plan_systemd_app(spec, self.systemd_actual.get(name), self.unit_texts.get(name),
                                    self.digests.get(name), in_pm2=name in self.actual)
        plan = plan_app(spec, self.actual.get(name), self.digests.get(name))
        if name in self.systemd_actual and spec['managed'] and (spec['state'] != 'stopped' or name not in self.actual):
            # Out of systemd before PM2 starts it: the two never run the app at once.
            plan['actions'] = ['switch'] + plan['actions']
            plan['reasons'] = ['supervisor'] + plan['reasons']
            if spec['state'] == 'stopped':
                # PM2 cannot define an app without starting it (as for state present).
                plan['actions'] += ['start', 'stop']
        return plan

    def _apply(self):
        self.applied_at = time.time()
        by_name = dict((s['name'], s) for s in self.specs)
        needs_file = [by_name[p['name']] for p in self.plans
                      if by_name[p['name']]['managed'] and by_name[p['name']]['supervisor'] == 'pm2'
                      and set(p['actions']) & {'start', 'recreate', 'reload', 'restart'}]
        eco = self._write_ecosystem(needs_file) if needs_file else None
        waits, systemd_waits = [], []
        try:
            for plan in self.plans:
                spec = by_name[plan['name']]
                if plan['actions'] == ['delete']:
                    self._delete_everywhere(spec['name'])
                    continue
                if spec['supervisor'] == 'systemd':
                    if self._run_systemd_actions(spec, plan['actions']):
                        systemd_waits.append(spec)
                    continue
                fresh = self._run_actions(spec, plan['actions'], eco)
                if set(plan['actions']) & {'start', 'recreate', 'reload', 'restart', 'scale'} and 'stop' not in plan['actions']:
                    waits.append((spec, fresh))
        finally:
            if eco:
                os.unlink(eco)
        if waits:
            self._wait_ready(waits)
        if systemd_waits:
            self._wait_systemd_ready(systemd_waits)
        if self.module.params['save'] and self.pm2_touched:
            self.runner.run('save', '--force')
            for name in ('dump.pm2', 'dump.pm2.bak'):
                path = os.path.join(self.runner.pm2_home, name)
                if os.path.exists(path):
                    os.chmod(path, 0o600)

    def _run_actions(self, spec, actions, eco):
        """Run one app's actions; returns True when its processes were newly created (restart count must be 0)."""
        name = spec['name']
        exists = name in self.actual
        fresh = False
        for action in actions:
            if action == 'switch':
                self._systemd_remove(name)
                continue
            self.pm2_touched = True
            if action == 'start' and not exists:
                self.runner.run('start', eco, '--only', name)
                fresh = exists = True
            elif action == 'start':
                # `pm2 start NAME` would run NAME as a script if the app vanished; restart never does.
                self.runner.run('restart', name)
            elif action == 'recreate':
                self.runner.run('delete', name)
                self.runner.run('start', eco, '--only', name)
                fresh = True
            elif action in ('reload', 'restart'):
                if spec['managed']:
                    self.runner.run(action, eco, '--only', name)
                else:
                    self.runner.run(action, name)
            elif action == 'scale':
                self.runner.run('scale', name, str(spec['instances']))
            elif action in ('stop', 'delete'):
                self.runner.run(action, name)
        return fresh

    def _poll_ready(self, pending, poll, settled, systemd=False):
        """One readiness loop for both supervisors: poll every pending app at once until settled(name, entry, apps,
        now) says it is ready (it raises on a crash loop); fail at the first app still pending at ready_timeout."""
        deadline = time.time() + max(e['spec']['ready_timeout'] for e in pending.values())
        while pending:
            apps = poll()
            now = time.time()
            for name in list(pending):
                if settled(name, pending[name], apps, now):
                    self.state_after[name] = 'online'
                    del pending[name]
            if not pending:
                break
            if time.time() > deadline:
                name = sorted(pending)[0]
                app = apps.get(name)
                self._fail_unready(name, app['instances'] if app else [], 'not ready within ready_timeout', systemd)
            time.sleep(POLL_INTERVAL)

    def _wait_systemd_ready(self, specs):
        """Every instance active with the same main PID for its settle time; a crash loop (an automatic restart, a
        failed unit or the start limit) fails. Then the env-file digest the instances started with is recorded."""
        def settled(name, entry, apps, now):
            spec = entry['spec']
            want = spec.get('instances') or len(self.systemd_actual.get(name, {}).get('instances', [])) or 1
            instances = [i for i in (apps.get(name) or {}).get('instances', []) if i['pm_id'] < want]
            seen = dict((i['pm_id'], (i['restart_time'], i['pid'])) for i in instances)
            if entry['first'] is None:
                entry['first'] = seen
            bad = [i for i in instances if i['status'] in ('errored', 'waiting restart')]
            restarted = [i for i in instances if i['restart_time'] > entry['first'].get(i['pm_id'], (0,))[0]]
            if bad or restarted:
                self._fail_unready(name, instances, 'crashed', systemd=True)
            ready = len(instances) == want and all(i['status'] == 'online' for i in instances)
            if not ready:
                entry['since'] = None
                return False
            if entry['since'] is None or entry['since'][1] != seen:
                entry['since'] = (now, seen)
                return False
            if (now - entry['since'][0]) * 1000 < spec['settle_time']:
                return False
            if spec['managed']:
                self._write_systemd_state(name, self.digests.get(name))
            return True

        pending = dict((s['name'], {'spec': s, 'first': None, 'since': None}) for s in specs)
        self._poll_ready(pending, lambda: self.systemd.apps(sorted(pending)), settled, systemd=True)

    def _wait_ready(self, waits):
        """PM2: every instance online, the right count, no restart and no newer start time for the settle time."""
        def settled(name, entry, apps, now):
            spec = entry['spec']
            app = apps.get(name)
            instances = app['instances'] if app else []
            want = spec.get('instances') or len(self.actual.get(name, {}).get('instances', [])) or 1
            seen = dict((i['pm_id'], (i['restart_time'], i['pm_uptime'])) for i in instances)
            if entry['first'] is None:
                entry['first'] = seen
            bad = [i for i in instances if i['status'] in ('errored', 'stopped', 'waiting restart')]
            restarted = [pid for pid, (count, dummy) in seen.items()
                         if count > entry['first'].get(pid, (count,))[0] or (entry['fresh'] and count > 0)]
            if bad or restarted:
                self._fail_unready(name, instances, 'crashed' if restarted else 'not online')
            ready = len(instances) == want and all(i['status'] == 'online' for i in instances)
            if not ready:
                entry['since'] = None
                return False
            if entry['since'] is None or set(seen) != set(entry['since'][1]):
                entry['since'] = (now, seen)
                return False
            if any(seen[pid][1] > entry['since'][1][pid][1] for pid in seen):
                self._fail_unready(name, instances, 'restarted while settling')
            return (now - entry['since'][0]) * 1000 >= spec['settle_time']

        pending = dict((s['name'], {'spec': s, 'fresh': f, 'first': None, 'since': None}) for s, f in waits)
        self._poll_ready(pending, self.runner.jlist, settled)

    def _fail_unready(self, name, instances, why, systemd=False):
        """Fail with the instances' states and the app's last log lines (error log, else this run's journal)."""
        logs = sorted(set(i['err_log'] for i in instances if i.get('err_log')))
        log_tail = []
        for path in logs:
            log_tail.extend(tail(path))
        if systemd and not logs:
            # This run's lines only: since the actions began (a second of slack for clock granularity).
            log_tail = self.systemd.journal_tail([instance_unit(name, i['pm_id']) for i in instances] or
                                                 [instance_unit(name, 0)], LOG_TAIL_LINES, self.applied_at - 1)
        label = (lambda i: instance_unit(name, i['pm_id'])) if systemd else (lambda i: i['pm_id'])
        status = ', '.join('%s:%s' % (label(i), i['status']) for i in instances) or 'no process'
        restarts = max([i['restart_time'] for i in instances] or [0])
        self.state_after[name] = why
        raise Pm2Error('app %s %s (status %s, restarts %d); last log lines:\n%s'
                       % (name, why, status, restarts, '\n'.join(log_tail[-LOG_TAIL_LINES:])),
                       app=name, status=status, restarts=restarts, log_tail=log_tail[-LOG_TAIL_LINES:])

    # ----------------------------------------------------------- results
    def _live(self, name):
        """(supervisor, parsed app) of what runs the app now, or (None, None)."""
        if name in self.actual:
            return 'pm2', self.actual[name]
        if name in self.systemd_actual:
            return 'systemd', self.systemd_actual[name]
        return None, None

    def _status(self, name):
        if name in self.state_after:
            return self.state_after[name]
        plan = next((p for p in self.plans if p['name'] == name), None)
        if plan and not self.check_mode and plan['actions']:
            last = plan['actions'][-1]
            return {'delete': 'absent', 'stop': 'stopped', 'install': 'stopped'}.get(last, 'online')
        dummy, app = self._live(name)
        if app is None or not app['instances']:
            return 'absent' if app is None else 'stopped'
        statuses = sorted(set(i['status'] for i in app['instances']))
        return statuses[0] if len(statuses) == 1 else 'mixed'

    def _result(self):
        apps = []
        for plan in self.plans:
            spec = next(s for s in self.specs if s['name'] == plan['name'])
            apps.append(dict(name=plan['name'], action='+'.join(plan['actions']) or 'none', actions=plan['actions'],
                             reasons=plan['reasons'], state=spec['state'], supervisor=spec['supervisor'],
                             status=self._status(plan['name'])))
        result = dict(apps=apps)
        if self.module.params['apps'] is None and apps:
            result.update(action=apps[0]['action'], reasons=apps[0]['reasons'])
        return result

    def _before(self, name):
        supervisor, app = self._live(name)
        if app is None:
            return None
        fingerprint = app['fingerprint'] if supervisor == 'systemd' else read_fingerprint(app['markers'].get(MARKER_SPEC))
        return dict(supervisor=supervisor, script=app['script'], cwd=app['cwd'], exec_mode=app['exec_mode'], namespace=app['namespace'],
                    instances=len(app['instances']), release=app['markers'].get(MARKER_RELEASE),
                    env_keys=sorted(k[4:] for k in fingerprint if k.startswith('env.')),
                    status=sorted(set(i['status'] for i in app['instances'])))

    def _after(self, spec, plan):
        if plan['actions'][-1:] == ['delete'] or (spec['state'] in ('absent', 'stopped') and not self._live(spec['name'])[1]):
            return None
        if not spec['managed']:
            before = self._before(spec['name']) or {}
            before['status'] = ['stopped' if spec['state'] == 'stopped' else 'online']
            return before
        pm2 = spec['pm2']
        return dict(supervisor=spec['supervisor'], script=pm2['script'], cwd=pm2['cwd'], exec_mode=pm2['exec_mode'],
                    namespace=pm2['namespace'] or 'default', instances=spec['instances'], release=spec['release'], env_keys=sorted(spec['env']),
                    status=['stopped' if spec['state'] == 'stopped' or 'stop' in plan['actions'] else 'online'],
                    changed_fields=plan['reasons'])

    def diff(self):
        before, after = {}, {}
        for spec, plan in zip(self.specs, self.plans):
            before[spec['name']] = self._before(spec['name'])
            after[spec['name']] = self._after(spec, plan)
            if after[spec['name']] and before[spec['name']] is not None:
                before[spec['name']]['changed_fields'] = plan['reasons']
        return dict(before=before, after=after)


class Pm2InfoModule(Pm2Module):

    def __init__(self, module):
        super(Pm2InfoModule, self).__init__(module)
        self.apps = {}

    def _execute(self):
        name = self.module.params['name']
        if name is not None:
            validate_name(name)
        now_ms = int(time.time() * 1000)
        live = [('pm2', self.runner.jlist(spawn=False))]
        # systemd apps of this user, in the same shape (status table, health): one supervisor column apart.
        units = [n for n in self.systemd.managed_names() if name is None or n == name]
        live.append(('systemd', dict((n, a) for n, a in (self.systemd.apps(units) if units else {}).items()
                                     if a['user'] == self.runner.user)))
        for supervisor, apps in live:
            for app_name, app in apps.items():
                if name is not None and app_name != name:
                    continue
                self.apps[app_name] = self._describe(supervisor, app, now_ms)

    @staticmethod
    def _describe(supervisor, app, now_ms):
        instances = [dict(pm_id=i['pm_id'], pid=i['pid'], status=i['status'], memory=i['memory'], cpu=i['cpu'],
                          restarts=i['restart_time'],
                          uptime=max(0, now_ms - i['pm_uptime']) if i['status'] == 'online' and i['pm_uptime'] else 0)
                     for i in app['instances']]
        cwd = app['cwd']
        return dict(
            name=app['name'],
            supervisor=supervisor,
            instances_online=sum(1 for i in instances if i['status'] == 'online'),
            instances_total=len(instances),
            instances=instances,
            exec_mode=app['exec_mode'],
            script=app['script'],
            cwd=cwd,
            release=os.path.realpath(cwd) if cwd else None,
            recorded_release=app['markers'].get(MARKER_RELEASE),
            managed=(app['unit'] is not None) if supervisor == 'systemd' else app['markers'].get(MARKER_SPEC) is not None,
            version=app['version'],
            namespace=app['namespace'],
            conflict=app['conflict'],
        )

    def _result(self):
        return dict(apps=self.apps)
