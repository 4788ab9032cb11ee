# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Module lifecycle for pm2_app and pm2_info: argument specs, execute/result/diff, actions, readiness."""

from __future__ import annotations

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

SCOPE_ARGSPEC = dict(
    executable=dict(type='path'),
    pm2_home=dict(type='path'),
    user=dict(type='str'),
)

APP_OPTIONS = dict(
    name=dict(type='str'),
    state=dict(type='str', default='started', choices=['present', 'started', 'stopped', 'restarted', 'reloaded', 'absent']),
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

    def execute(self):
        try:
            self.runner = Pm2Runner(self.module, **dict((k, self.module.params[k]) for k in SCOPE_ARGSPEC))
            self._execute()
        except Pm2Error as exc:
            details = dict(exc.details)
            details['pm2_calls'] = self.runner.calls if self.runner else 0
            details.update(self._result())
            # A failure after an action still changed the host; say so.
            self.module.fail_json(msg=str(exc), changed=self.changed and not self.check_mode, **details)
        except Exception as exc:  # pylint: disable=broad-except
            self.module.fail_json(msg='unexpected error: %s' % exc, exception=traceback.format_exc())
        self.module.exit_json(**self.result)

    @property
    def result(self):
        result = self._result()
        result['changed'] = self.changed
        result['pm2_calls'] = self.runner.calls
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

    # ----------------------------------------------------------- inputs
    def _items(self):
        params = self.module.params
        if params['apps'] is None:
            return [dict((k, params[k]) for k in APP_OPTIONS)]
        for key in APP_OPTIONS:
            if key not in ('state', 'exec_mode') and params[key] is not None:
                raise SpecError(key, 'top-level app options cannot be combined with apps; set it per item')
        return params['apps']

    def _normalise(self):
        cpus = os.cpu_count() or 1
        specs, seen = [], set()
        for index, item in enumerate(self._items()):
            try:
                spec = normalise_app(item, cpus)
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

    def _digest_key(self):
        path = os.path.join(self.state_dir, 'digest.key')
        if os.path.exists(path):
            with open(path, 'rb') as handle:
                return handle.read()
        if self.check_mode:
            return None
        self._ensure_state_dir()
        key = os.urandom(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'wb') as handle:
            handle.write(key)
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

    # ----------------------------------------------------------- main flow
    def _execute(self):
        self.specs = self._normalise()
        self.actual = self.runner.jlist(spawn=not self.module.check_mode)
        namespaces = set(a['namespace'] for a in self.actual.values())
        namespaces.update(s['pm2']['namespace'] for s in self.specs if s['managed'] and s['pm2']['namespace'])
        for spec in self.specs:
            if spec['name'] in namespaces:
                raise SpecError('name', '%s is also a namespace; PM2 would act on the whole namespace' % spec['name'])

        with_env_file = [s for s in self.specs if s['managed'] and s['env_file'] and s['state'] != 'absent']
        if with_env_file:
            key = self._digest_key()
            for spec in with_env_file:
                with open(spec['env_file'], 'rb') as handle:
                    content = handle.read()
                self.digests[spec['name']] = env_digest(key, content) if key else None

        # Plan everything before the first mutation: a refusal or bad input changes nothing.
        self.plans = [plan_app(s, self.actual.get(s['name']), self.digests.get(s['name'])) for s in self.specs]
        if with_env_file and self._ensure_preload():
            self.changed = True
        if any(p['actions'] for p in self.plans):
            self.changed = True
        if self.check_mode or not any(p['actions'] for p in self.plans):
            return
        self._apply()

    def _apply(self):
        by_name = dict((s['name'], s) for s in self.specs)
        needs_file = [by_name[p['name']] for p in self.plans
                      if by_name[p['name']]['managed'] and set(p['actions']) & {'start', 'recreate', 'reload', 'restart'}]
        eco = self._write_ecosystem(needs_file) if needs_file else None
        waits = []
        try:
            for plan in self.plans:
                spec = by_name[plan['name']]
                fresh = self._run_actions(spec, plan['actions'], eco)
                if set(plan['actions']) & {'start', 'recreate', 'reload', 'restart', 'scale'} and 'stop' not in plan['actions']:
                    waits.append((spec, fresh))
        finally:
            if eco:
                os.unlink(eco)
        if waits:
            self._wait_ready(waits)
        if self.module.params['save']:
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
            if action == 'start' and not exists:
                self.runner.run('start', eco, '--only', name)
                fresh = True
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

    def _wait_ready(self, waits):
        """Poll jlist until each app is fully online and stays so for its settle time; fail on crash loops."""
        start = time.time()
        deadline = start + max(s['ready_timeout'] for s, dummy in waits)
        pending = dict((s['name'], {'spec': s, 'fresh': f, 'first': None, 'since': None}) for s, f in waits)
        while pending:
            apps = self.runner.jlist()
            now = time.time()
            for name in list(pending):
                entry = pending[name]
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
                    continue
                if entry['since'] is None or set(seen) != set(entry['since'][1]):
                    entry['since'] = (now, seen)
                    continue
                if any(seen[pid][1] > entry['since'][1][pid][1] for pid in seen):
                    self._fail_unready(name, instances, 'restarted while settling')
                if (now - entry['since'][0]) * 1000 >= spec['settle_time']:
                    self.state_after[name] = 'online'
                    del pending[name]
            if not pending:
                break
            if time.time() > deadline:
                name = sorted(pending)[0]
                app = apps.get(name)
                self._fail_unready(name, app['instances'] if app else [], 'not ready within ready_timeout')
            time.sleep(POLL_INTERVAL)

    def _fail_unready(self, name, instances, why):
        logs = sorted(set(i['err_log'] for i in instances if i.get('err_log')))
        log_tail = []
        for path in logs:
            log_tail.extend(tail(path))
        status = ', '.join('%s:%s' % (i['pm_id'], i['status']) for i in instances) or 'no process'
        restarts = max([i['restart_time'] for i in instances] or [0])
        self.state_after[name] = why
        raise Pm2Error('app %s %s (status %s, restarts %d); last error log lines:\n%s'
                       % (name, why, status, restarts, '\n'.join(log_tail[-LOG_TAIL_LINES:])),
                       app=name, status=status, restarts=restarts, log_tail=log_tail[-LOG_TAIL_LINES:])

    # ----------------------------------------------------------- results
    def _status(self, name):
        if name in self.state_after:
            return self.state_after[name]
        plan = next((p for p in self.plans if p['name'] == name), None)
        if plan and not self.check_mode and plan['actions']:
            last = plan['actions'][-1]
            return {'delete': 'absent', 'stop': 'stopped'}.get(last, 'online')
        app = self.actual.get(name)
        if app is None:
            return 'absent'
        statuses = sorted(set(i['status'] for i in app['instances']))
        return statuses[0] if len(statuses) == 1 else 'mixed'

    def _result(self):
        apps = []
        for plan in self.plans:
            spec = next(s for s in self.specs if s['name'] == plan['name'])
            apps.append(dict(name=plan['name'], action='+'.join(plan['actions']) or 'none', actions=plan['actions'],
                             reasons=plan['reasons'], state=spec['state'], status=self._status(plan['name'])))
        result = dict(apps=apps)
        if self.module.params['apps'] is None and apps:
            result.update(action=apps[0]['action'], reasons=apps[0]['reasons'])
        return result

    def _before(self, name):
        app = self.actual.get(name)
        if app is None:
            return None
        fingerprint = read_fingerprint(app['markers'].get(MARKER_SPEC))
        return dict(script=app['script'], cwd=app['cwd'], exec_mode=app['exec_mode'], namespace=app['namespace'],
                    instances=len(app['instances']), release=app['markers'].get(MARKER_RELEASE),
                    env_keys=sorted(k[4:] for k in fingerprint if k.startswith('env.')),
                    status=sorted(set(i['status'] for i in app['instances'])))

    def _after(self, spec, plan):
        if plan['actions'][-1:] == ['delete'] or (spec['state'] in ('absent', 'stopped') and not self.actual.get(spec['name'])):
            return None
        if not spec['managed']:
            before = self._before(spec['name']) or {}
            before['status'] = ['stopped' if spec['state'] == 'stopped' else 'online']
            return before
        pm2 = spec['pm2']
        return dict(script=pm2['script'], cwd=pm2['cwd'], exec_mode=pm2['exec_mode'], namespace=pm2['namespace'] or 'default',
                    instances=spec['instances'], release=spec['release'], env_keys=sorted(spec['env']),
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
        for app_name, app in self.runner.jlist(spawn=False).items():
            if name is not None and app_name != name:
                continue
            instances = [dict(pm_id=i['pm_id'], pid=i['pid'], status=i['status'], memory=i['memory'], cpu=i['cpu'],
                              restarts=i['restart_time'],
                              uptime=max(0, now_ms - i['pm_uptime']) if i['status'] == 'online' and i['pm_uptime'] else 0)
                         for i in app['instances']]
            cwd = app['cwd']
            self.apps[app_name] = dict(
                name=app_name,
                instances_online=sum(1 for i in instances if i['status'] == 'online'),
                instances_total=len(instances),
                instances=instances,
                exec_mode=app['exec_mode'],
                script=app['script'],
                cwd=cwd,
                release=os.path.realpath(cwd) if cwd else None,
                recorded_release=app['markers'].get(MARKER_RELEASE),
                managed=app['markers'].get(MARKER_SPEC) is not None,
                version=app['version'],
                namespace=app['namespace'],
                conflict=app['conflict'],
            )

    def _result(self):
        return dict(apps=self.apps)
