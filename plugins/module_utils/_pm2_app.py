# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The pm2_app lifecycle: normalise -> read -> plan -> apply -> wait -> result/diff, as a loop over the supervisor
drivers (_pm2_supervisor.Pm2Supervisor, _systemd_supervisor.SystemdSupervisor). ``run_pm2_app`` is its entry point
for pm2_app and for any other module of the collection that converges apps in the same run."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error, SpecError, file_size
from ansible_collections.nodefleet.pm2.plugins.module_utils._health import probe
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import OPTIONS, pm2_app_argument_spec
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import Pm2Runner, env_digest
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_supervisor import Pm2Supervisor
from ansible_collections.nodefleet.pm2.plugins.module_utils._report import failure_error
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import normalise_app, resolve_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._supervisor import READY, Supervisor, Waiting
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd import SystemdRunner
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd_supervisor import SystemdSupervisor
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd_unit import check_systemd_spec

POLL_INTERVAL = 0.25
MUTUALLY_EXCLUSIVE = [('name', 'apps')]
REQUIRED_ONE_OF = [('name', 'apps')]


def run_pm2_app(module: Any, params: Dict[str, Any], check_mode: bool, diff: Optional[bool] = None) -> Dict[str, Any]:
    """Converge apps as nodefleet.pm2.pm2_app does, in the calling module's process. The contract:

    - ``module``: the calling AnsibleModule (run_command, get_bin_path, warn; never exit_json/fail_json here).
    - ``params``: pm2_app's options as a dict (``apps`` or ``name`` + app options, ``user``, ``pm2_home``,
      ``executable``, ``save``); validated and defaulted here against pm2_app's argument spec.
    - ``check_mode``: plan only, change nothing and probe nothing (as pm2_app in check mode). ``diff``: add ``diff``
      (before/after per app) to the result; default ``module._diff``.
    - Outside check mode: applies the plan, waits until every acted-on app is ready, then runs the ``health`` check
      of every app that should run (also when nothing changed), all before it returns.

    - Returns exactly pm2_app's result: ``changed``, ``apps`` (per app ``name``, ``action``, ``actions``,
      ``reasons``, ``state``, ``supervisor``, ``status``), ``action``/``reasons`` in the single-app form,
      ``pm2_calls``, ``systemctl_calls`` and ``diff`` when asked.
    - Raises ``_common.Pm2Error`` (``SpecError`` for bad input, which names ``field`` and, in a list, the ``app``)
      when it cannot converge; ``exc.details`` then hold pm2_app's failure result: the keys above known so far
      (``changed`` is true when something was changed before the failure) plus the failure keys (``field``,
      ``app``, ``status``, ``restarts``, ``log_tail``, ``failures``, ``rc``, ``stdout``, ``stderr``).
    """
    given = {k: v for k, v in params.items() if v is not None}  # module.params lists every option, unset ones as None
    validation = ArgumentSpecValidator(pm2_app_argument_spec(), mutually_exclusive=MUTUALLY_EXCLUSIVE,
                                       required_one_of=REQUIRED_ONE_OF).validate(given)

    if validation.error_messages:
        raise SpecError('options', '; '.join(validation.error_messages))
    return AppRun(module, validation.validated_parameters, check_mode, module._diff if diff is None else diff).execute()


class AppRun:
    """One run of pm2_app over both supervisors."""

    def __init__(self, module: Any, params: Dict[str, Any], check_mode: bool, diff: bool) -> None:
        self.module = module
        self.params = params
        self.check_mode = check_mode
        self.want_diff = diff
        self.changed = False
        self.runner: Optional[Pm2Runner] = None
        self.systemd: Optional[SystemdRunner] = None
        self.supervisors: List[Supervisor] = []
        self.specs: List[Dict[str, Any]] = []
        self.plans: List[Dict[str, Any]] = []
        self.digests: Dict[str, Optional[str]] = {}
        self.status_after: Dict[str, str] = {}
        self.strays: Dict[str, List[int]] = {}
        self.log_offsets: Dict[str, int] = {}
        self.applied_at = 0.0
        self.searched = ''

    def supervisor(self, name: str) -> Supervisor:
        return next(s for s in self.supervisors if s.name == name)

    def execute(self) -> Dict[str, Any]:
        try:
            self.runner = Pm2Runner(self.module, **{k: self.params[k] for k in ('executable', 'pm2_home', 'user')})
            self.systemd = SystemdRunner(self.module)
            self.supervisors = [Pm2Supervisor(self), SystemdSupervisor(self)]
            self.searched = '%s or systemd' % self.runner.daemon
            self._converge()
        except Pm2Error as exc:
            exc.details.update(self._calls())
            exc.details.update(self._apps_result(), changed=self.changed and not self.check_mode)
            raise
        return self.result()

    # ------------------------------------------------------------- normalise
    def _items(self) -> List[Dict[str, Any]]:
        params = self.params
        if params['apps'] is None:
            return [{o.name: params.get(o.name) for o in OPTIONS}]
        for option in OPTIONS:
            if option.default is None and params.get(option.name) is not None:
                raise SpecError(option.name, 'top-level app options cannot be combined with apps; set it per item')
        return params['apps']

    def _normalise(self, item: Dict[str, Any], cpus: int) -> Dict[str, Any]:
        spec = normalise_app(item, cpus)
        if spec['supervisor'] == 'systemd' and spec['managed']:
            ignored = check_systemd_spec(spec, item)
            if ignored:
                self.module.warn('app %s: supervisor systemd ignores %s' % (spec['name'], ', '.join(ignored)))
        return resolve_app(spec)

    def normalise(self) -> List[Dict[str, Any]]:
        """Every app validated and resolved before anything is read: bad input changes nothing."""
        cpus = os.cpu_count() or 1
        specs, seen = [], set()
        for index, item in enumerate(self._items()):
            try:
                spec = self._normalise(item, cpus)
            except SpecError as exc:
                name = item.get('name')
                raise exc.naming(name if isinstance(name, str) and name else 'number %d of apps' % (index + 1)) from None

            if spec['name'] in seen:
                raise SpecError('name', 'app %s is listed twice' % spec['name'])
            seen.add(spec['name'])
            specs.append(spec)
        return specs

    # ------------------------------------------------------------- read and plan
    def _read_env_digests(self) -> None:
        keys: Dict[str, Optional[bytes]] = {}
        for spec in self.specs:
            if not (spec['managed'] and spec['env_file'] and spec['state'] != 'absent'):
                continue
            supervisor = self.supervisor(spec['supervisor'])
            if supervisor.name not in keys:
                keys[supervisor.name] = supervisor.digest_key()
            with open(spec['env_file'], 'rb') as handle:
                content = handle.read()
            key = keys[supervisor.name]
            self.digests[spec['name']] = env_digest(key, content) if key else None

    def plan(self, spec: Dict[str, Any]) -> Dict[str, Any]:
        name = spec['name']
        if spec['state'] == 'absent':
            # Gone from whichever supervisor has it.
            found = any(s.has(name) for s in self.supervisors)
            return {'name': name, 'actions': ['delete'] if found else [], 'reasons': []}
        pm2, systemd = self.supervisors
        if not spec['managed'] and systemd.has(name) and not pm2.has(name):
            # By name only: act on the app where it lives, never move it.
            spec['supervisor'] = 'systemd'
        supervisor = self.supervisor(spec['supervisor'])
        return supervisor.plan(spec, elsewhere=supervisor.other.has(name))

    def _converge(self) -> None:
        self.specs = self.normalise()
        for supervisor in self.supervisors:
            supervisor.prepare(self.specs)
        for supervisor in self.supervisors:
            supervisor.read(self.specs)
        self._read_env_digests()
        # Plan everything before the first change: a refusal or bad input changes nothing.
        self.plans = [self.plan(s) for s in self.specs]
        files_changed = any(s.ensure_files(self.specs) for s in self.supervisors)
        acting = any(p['actions'] for p in self.plans)
        self.changed = files_changed or acting
        if self.check_mode:
            return  # no change, and no probe either
        waiting = self._apply() if acting else []
        failures = self.wait(waiting)
        for supervisor in self.supervisors:
            supervisor.record(waiting)
            self.strays.update(supervisor.stop_strays(waiting))
        if self.strays:
            self.module.warn('stopped processes the supervisor no longer tracked, which still ran older code of the app: %s'
                             % '; '.join('%s: pid %s' % (n, ', '.join(map(str, p))) for n, p in sorted(self.strays.items())))
        failures = failures or self.check_health()
        if failures:
            raise failure_error(failures)
        if acting:
            for supervisor in self.supervisors:
                supervisor.finish()

    # ------------------------------------------------------------- apply, wait, health
    def _apply(self) -> List[Waiting]:
        self.applied_at = time.time()
        self.log_offsets = {path: file_size(path) for s in self.supervisors for path in s.log_files()}
        by_name = {s['name']: s for s in self.specs}
        waiting = []
        for supervisor in self.supervisors:
            supervisor.begin_apply(self.specs, self.plans)
        try:
            for plan in self.plans:
                spec = by_name[plan['name']]
                if plan['actions'] == ['delete']:
                    for supervisor in self.supervisors:
                        if supervisor.has(spec['name']):
                            supervisor.remove(spec['name'])
                elif plan['actions']:
                    entry = self.supervisor(spec['supervisor']).apply(spec, plan)
                    if entry:
                        waiting.append(entry)
        finally:
            for supervisor in self.supervisors:
                supervisor.end_apply()
        return waiting

    def wait(self, entries: List[Waiting]) -> List[Dict[str, Any]]:
        """One readiness loop for both supervisors: poll every pending app at once until its supervisor says it is
        ready or why it failed; an app still pending after its ready_timeout fails. Every app is watched to its end,
        so one crash loop does not hide another."""
        start = time.time()
        for entry in entries:
            entry.deadline = start + entry.spec['ready_timeout']
        pending = list(entries)
        failures = []
        while pending:
            polled = {s.name: s.poll(sorted(e.name for e in pending if e.supervisor is s))
                      for s in self.supervisors if any(e.supervisor is s for e in pending)}
            now = time.time()
            for entry in list(pending):
                entry.app = polled[entry.supervisor.name].get(entry.name)
                verdict = entry.supervisor.check(entry, entry.app, now)
                if verdict is None and now > entry.deadline:
                    verdict = 'not ready within ready_timeout'
                if verdict is None:
                    continue
                pending.remove(entry)
                self.status_after[entry.name] = 'online' if verdict == READY else verdict
                if verdict != READY:
                    failures.append(entry.supervisor.failure(entry, verdict))
            if pending:
                time.sleep(POLL_INTERVAL)
        return failures

    def check_health(self) -> List[Dict[str, Any]]:
        """The health check of every app that should run, once every app is ready; each failure with the check's last
        answer and the app's state and log tails."""
        failures = []
        for spec in self.specs:
            if not spec['health'] or spec['state'] not in ('started', 'restarted', 'reloaded'):
                continue
            problem = probe(self.module, spec['health'])
            if problem:
                supervisor = self.supervisor(spec['supervisor'])
                entry = Waiting(spec, supervisor)
                entry.app = supervisor.poll([spec['name']]).get(spec['name'])
                failure = supervisor.failure(entry, 'failed its health check')
                failure['reason'] = [problem] + failure['reason']
                failures.append(failure)
                self.status_after[spec['name']] = 'unhealthy'
        return failures

    # ------------------------------------------------------------- result and diff

    def _calls(self) -> Dict[str, int]:
        return {'pm2_calls': self.runner.calls if self.runner else 0,
                'systemctl_calls': self.systemd.calls if self.systemd else 0}

    def _live(self, name: str):
        """(supervisor, parsed app) of what runs the app now, or (None, None)."""
        for supervisor in self.supervisors:
            if supervisor.has(name):
                return supervisor, supervisor.live[name]
        return None, None

    def _status(self, name: str, plan: Dict[str, Any]) -> str:
        if name in self.status_after:
            return self.status_after[name]
        if not self.check_mode and plan['actions']:
            return {'delete': 'absent', 'stop': 'stopped', 'install': 'stopped'}.get(plan['actions'][-1], 'online')
        app = self._live(name)[1]
        if app is None or not app['instances']:
            return 'absent' if app is None else 'stopped'
        statuses = sorted({i['status'] for i in app['instances']})
        return statuses[0] if len(statuses) == 1 else 'mixed'

    def _apps_result(self) -> Dict[str, Any]:
        apps = []
        for spec, plan in zip(self.specs, self.plans):
            apps.append(dict(name=plan['name'], action='+'.join(plan['actions']) or 'none', actions=plan['actions'],
                             reasons=plan['reasons'], state=spec['state'], supervisor=spec['supervisor'],
                             status=self._status(plan['name'], plan)))
        result: Dict[str, Any] = {'apps': apps}
        if self.params['apps'] is None and apps:
            result.update(action=apps[0]['action'], reasons=apps[0]['reasons'])
        return result

    def result(self) -> Dict[str, Any]:
        result = self._apps_result()
        result['changed'] = self.changed or bool(self.strays)
        if self.strays:
            result['strays'] = self.strays
        result.update(self._calls())
        if self.want_diff:
            result['diff'] = self.diff()
        return result

    def _before(self, name: str) -> Optional[Dict[str, Any]]:
        supervisor, app = self._live(name)
        if app is None:
            return None
        fingerprint = supervisor.recorded_fingerprint(app)
        return dict(supervisor=supervisor.name, script=app['script'], cwd=app['cwd'], exec_mode=app['exec_mode'],
                    namespace=app['namespace'], instances=len(app['instances']), release=app['recorded_release'],
                    env_keys=sorted(k[4:] for k in fingerprint if k.startswith('env.')),
                    status=sorted({i['status'] for i in app['instances']}))

    def _after(self, spec: Dict[str, Any], plan: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        if plan['actions'][-1:] == ['delete'] or (spec['state'] in ('absent', 'stopped') and not self._live(spec['name'])[1]):
            return None
        stopped = spec['state'] == 'stopped' or 'stop' in plan['actions']
        if not spec['managed']:
            before = self._before(spec['name']) or {}
            before['status'] = ['stopped' if spec['state'] == 'stopped' else 'online']
            return before
        pm2 = spec['pm2']
        return dict(supervisor=spec['supervisor'], script=pm2['script'], cwd=pm2['cwd'], exec_mode=pm2['exec_mode'],
                    namespace=pm2['namespace'] or 'default', instances=spec['instances'], release=spec['release'],
                    env_keys=sorted(spec['env']), status=['stopped' if stopped else 'online'], changed_fields=plan['reasons'])

    def diff(self) -> Dict[str, Dict[str, Any]]:
        before, after = {}, {}
        for spec, plan in zip(self.specs, self.plans):
            before[spec['name']] = self._before(spec['name'])
            after[spec['name']] = self._after(spec, plan)
            if after[spec['name']] and before[spec['name']] is not None:
                before[spec['name']]['changed_fields'] = plan['reasons']
        return {'before': before, 'after': after}
