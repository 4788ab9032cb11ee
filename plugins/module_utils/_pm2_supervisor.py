# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""PM2 as a supervisor driver: reads the daemon's process list, plans (the switch from systemd included), runs
the pm2 commands, watches the apps settle, and keeps the files under $PM2_HOME/nodefleet: the env-digest key, the
env-file preload, the generated ecosystem file and the restart baseline that pm2_info reads."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Dict, List, Optional

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import (
    SpecError,
    atomic_write,
    private_temp_file,
    read_tail,
)
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import (
    ENV_PRELOAD_JS,
    MARKER_SPEC,
    child_pids,
    ecosystem_app,
    find_strays,
    is_running,
    pm2_identity,
)
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_plan import plan_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._report import describe, instance_word, pm2_reasons
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import read_fingerprint
from ansible_collections.nodefleet.pm2.plugins.module_utils._supervisor import READY, App, Plan, Spec, Supervisor, Waiting

# Actions after which the app's processes are watched until they settle.
STARTING = {'start', 'recreate', 'reload', 'restart', 'scale'}
NOT_RUNNING = ('errored', 'stopped', 'waiting restart')
PM2_KILL_TIMEOUT_MS = 1600  # PM2's default kill_timeout


def state_dir(pm2_home: str) -> str:
    return os.path.join(pm2_home, 'nodefleet')


def read_key(directory: str, create: bool, owner: Optional[tuple]) -> Optional[bytes]:
    """The HMAC key of env-file digests in ``directory``, created once (never replaced: digests recorded with it
    stay valid)."""
    path = os.path.join(directory, 'digest.key')
    if os.path.exists(path):
        with open(path, 'rb') as handle:
            return handle.read()
    if not create:
        return None
    key = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    if owner:
        os.fchown(fd, *owner)
    with os.fdopen(fd, 'wb') as handle:
        handle.write(key)
    return key


def read_restart_baseline(pm2_home: str) -> Dict[str, Dict[str, int]]:
    """{app: {pm_id: restart count right after pm2_app's last action on it}}; {} when there is none."""
    try:
        with open(os.path.join(state_dir(pm2_home), 'restarts.json')) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _running(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting for its parent."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(')') + 2:][:1] != 'Z'


def stop_processes(pids: List[int], timeout: float) -> None:
    """SIGINT, then SIGKILL to those still running after ``timeout`` seconds."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + (timeout if sig == signal.SIGINT else 2.0)
        while any(_running(pid) for pid in pids) and time.time() < deadline:
            time.sleep(0.1)
        pids = [pid for pid in pids if _running(pid)]
        if not pids:
            return


class Pm2Supervisor(Supervisor):

    name = 'pm2'

    def __init__(self, run: Any) -> None:
        super().__init__(run)
        self.runner = run.runner
        self.touched = False          # the process list changed: save it at the end
        self.started = set()          # apps whose processes this run created: their pm_ids are not known
        self.ecosystem: Optional[str] = None

    # ------------------------------------------------------------- files under $PM2_HOME/nodefleet
    @property
    def state_dir(self) -> str:
        return state_dir(self.runner.pm2_home)

    @property
    def owner(self) -> Optional[tuple]:
        return (self.runner.uid, self.runner.gid) if self.runner.switch_user else None

    @property
    def preload_path(self) -> str:
        return os.path.join(self.state_dir, 'env-preload.cjs')

    def digest_key(self) -> Optional[bytes]:
        if not self.run.check_mode:
            self.owned_dir(self.state_dir, self.owner)
        return read_key(self.state_dir, not self.run.check_mode, self.owner)

    def ensure_files(self, specs: List[Spec]) -> bool:
        """The env-file preload, when a PM2 app has an env file."""
        if not any(s['supervisor'] == 'pm2' and s['managed'] and s['env_file'] and s['state'] != 'absent' for s in specs):
            return False
        content = ENV_PRELOAD_JS.encode('utf-8')
        try:
            with open(self.preload_path, 'rb') as handle:
                if handle.read() == content:
                    return False
        except OSError:
            pass
        if not self.run.check_mode:
            self.owned_dir(self.state_dir, self.owner)
            atomic_write(self.preload_path, content, 0o644, self.owner)
        return True

    # ------------------------------------------------------------- reading and planning
    def read(self, specs: List[Spec]) -> None:
        uses_pm2 = any(s['supervisor'] == 'pm2' and s['state'] != 'absent' for s in specs)
        self.live = self.runner.jlist(spawn=uses_pm2 and not self.run.check_mode)
        namespaces = {a['namespace'] for a in self.live.values()}
        namespaces.update(s['pm2']['namespace'] for s in specs if s['managed'] and s['pm2']['namespace'])
        for spec in specs:
            if spec['name'] in namespaces:
                raise SpecError('name', '%s is also a namespace; PM2 would act on the whole namespace' % spec['name'])

    def plan(self, spec: Spec, elsewhere: bool) -> Plan:
        name = spec['name']
        plan = plan_app(spec, self.live.get(name), self.run.digests.get(name), self.run.searched)
        if elsewhere and spec['managed'] and (spec['state'] != 'stopped' or name not in self.live):
            # Out of systemd before PM2 starts it: the two never run the app at once.
            plan['actions'] = ['switch'] + plan['actions']
            plan['reasons'] = ['supervisor'] + plan['reasons']
            if spec['state'] == 'stopped':
                # PM2 cannot define an app without starting it (as for state present).
                plan['actions'] += ['start', 'stop']
        return plan

    def recorded_fingerprint(self, app: App) -> Dict[str, str]:
        return read_fingerprint(app['markers'].get(MARKER_SPEC))

    def log_files(self) -> List[str]:
        return [self.runner.log_path] + super().log_files()

    # ------------------------------------------------------------- changes
    def targets(self, name: str) -> List[str]:
        """The app's processes as PM2 ids where they are known and unambiguous (PM2 reads a numeric argument as an app
        or namespace of that name first), else its name, which validation keeps from meaning a file or a pattern."""
        if name not in self.live or name in self.started:
            return [name]
        ids = [str(i['pm_id']) for i in self.live[name]['instances']]
        names = set(self.live) | {a['namespace'] for a in self.live.values()}
        if not ids or not all(i.isdigit() for i in ids) or names & set(ids):
            return [name]
        return ids

    def begin_apply(self, specs: List[Spec], plans: List[Plan]) -> None:
        by_name = {s['name']: s for s in specs}
        needs_file = [by_name[p['name']] for p in plans
                      if by_name[p['name']]['managed'] and by_name[p['name']]['supervisor'] == 'pm2'
                      and set(p['actions']) & {'start', 'recreate', 'reload', 'restart'}]
        if needs_file:
            self.owned_dir(self.state_dir, self.owner)
            apps = [ecosystem_app(s, self.run.digests.get(s['name']), self.preload_path) for s in needs_file]
            self.ecosystem = private_temp_file(self.state_dir, json.dumps({'apps': apps}), self.owner, 'ecosystem-', '.json')

    def end_apply(self) -> None:
        if self.ecosystem:
            os.unlink(self.ecosystem)
            self.ecosystem = None

    def _start(self, name: str) -> None:
        self.runner.run('start', self.ecosystem, '--only', name)
        self.started.add(name)

    def _act(self, spec: Spec, action: str) -> None:
        name = spec['name']
        if action == 'start' and name not in self.live and name not in self.started:
            self._start(name)
        elif action == 'start':
            # `pm2 start NAME` would run NAME as a script if the app vanished; restart never does.
            self.runner.run('restart', *self.targets(name))
        elif action == 'recreate':
            self.runner.run('delete', *self.targets(name))
            self._start(name)
        elif action in ('reload', 'restart') and spec['managed']:
            self.runner.run(action, self.ecosystem, '--only', name)
        elif action == 'reload':
            self.runner.run('reload', name)  # one argument only; a cluster reload by name rolls through the instances
        elif action == 'scale':
            self.runner.run('scale', name, str(spec['instances']))
        else:  # restart, stop, delete
            self.runner.run(action, *self.targets(name))

    def apply(self, spec: Spec, plan: Plan) -> Optional[Waiting]:
        name = spec['name']
        for action in plan['actions']:
            if action == 'switch':
                self.other.remove(name)
                continue
            self.touched = True
            self._act(spec, action)
        if set(plan['actions']) & STARTING and 'stop' not in plan['actions']:
            return Waiting(spec, self, fresh=name in self.started)
        return None

    def remove(self, name: str) -> None:
        self.runner.run('delete', *self.targets(name))
        self.touched = True

    # ------------------------------------------------------------- readiness
    def poll(self, names: List[str]) -> Dict[str, App]:
        return self.runner.jlist()

    def check(self, entry: Waiting, app: Optional[App], now: float) -> Optional[str]:
        """Every instance online with a process, the right count, no restart and no newer start for the settle time."""
        instances = app['instances'] if app else []
        seen = {i['pm_id']: (i['restart_time'], i['pm_uptime']) for i in instances}
        if entry.first is None:
            entry.first = seen
        restarted = [pm_id for pm_id, (count, _uptime) in seen.items()
                     if count > entry.first.get(pm_id, (count,))[0] or (entry.fresh and count > 0)]
        if restarted:
            return 'crashed'
        if any(i['status'] in NOT_RUNNING for i in instances):
            return 'not online'
        if len(instances) != entry.want(self.live) or not all(is_running(i) for i in instances):
            entry.since = None
            return None
        if entry.since is None or set(seen) != set(entry.since[1]):
            entry.since = (now, seen)
            return None
        if any(seen[pm_id][1] > entry.since[1][pm_id][1] for pm_id in seen):
            return 'restarted while settling'
        return READY if (now - entry.since[0]) * 1000 >= entry.spec['settle_time'] else None

    def stop_strays(self, waited: List[Waiting]) -> Dict[str, List[int]]:
        """Stop the workers of the apps this run (re)started that PM2 no longer lists, as PM2 stops a process (SIGINT,
        SIGKILL after kill_timeout): until then they take their share of the app's connections with older code, and
        a health check may reach them instead of the new workers. app name -> pids stopped."""
        names = {e.name for e in waited if e.supervisor is self}
        daemon = self.runner.daemon_pid() if names else 0
        if not daemon:
            return {}
        first = child_pids(daemon)
        polled = {i['pid'] for e in waited if e.supervisor is self and e.app for i in e.app['instances']}
        if not find_strays(first, first, polled, pm2_identity, names):
            return {}  # the usual case: no read of PM2's list beyond the wait's last one
        listed = {i['pid'] for app in self.runner.jlist().values() for i in app['instances'] if i['pid']}
        strays = find_strays(first, child_pids(daemon), listed, pm2_identity, names)
        by_name = {s['name']: s for s in self.run.specs}
        for name, pids in strays.items():
            kill_timeout = by_name[name]['pm2'].get('kill_timeout')
            stop_processes(pids, (PM2_KILL_TIMEOUT_MS if kill_timeout is None else kill_timeout) / 1000.0)
        return strays

    def restarts_since(self, entry: Waiting, instance: Dict[str, Any]) -> int:
        count = instance['restart_time']
        return count if entry.fresh else max(0, count - (entry.first or {}).get(instance['pm_id'], (count,))[0])

    def failure(self, entry: Waiting, why: str) -> Dict[str, Any]:
        instances = entry.app['instances'] if entry.app else []
        rows = []
        for instance in instances:
            since = self.restarts_since(entry, instance)
            rows.append({'label': 'pm_id %s' % instance['pm_id'], 'word': instance_word(instance, since), 'restarts': since})
        log = read_tail(self.runner.log_path, self.run.log_offsets.get(self.runner.log_path, 0))
        script = entry.app['script'] if entry.app else None
        reason = pm2_reasons(log, entry.name, [i['pm_id'] for i in instances], script)
        return describe(entry.name, 'PM2', why, rows, reason, self.log_tails(instances))

    def record(self, waited: List[Waiting]) -> None:
        """The restart counts right after the action, per process, so pm2_info tells crashes from these reloads."""
        mine = [e for e in waited if e.supervisor is self and e.first is not None]
        baseline = read_restart_baseline(self.runner.pm2_home)
        gone = [s['name'] for s in self.run.specs if s['name'] in baseline and (s['state'] == 'absent' or s['supervisor'] != 'pm2')]
        if not mine and not gone:
            return
        for name in gone:
            del baseline[name]
        for entry in mine:
            baseline[entry.name] = {str(pm_id): 0 if entry.fresh else counts[0] for pm_id, counts in entry.first.items()}
        self.owned_dir(self.state_dir, self.owner)
        atomic_write(os.path.join(self.state_dir, 'restarts.json'), json.dumps(baseline, sort_keys=True), 0o600, self.owner)

    def finish(self) -> None:
        if self.run.params['save'] and self.touched:
            self.runner.run('save', '--force')
            for name in ('dump.pm2', 'dump.pm2.bak'):
                path = os.path.join(self.runner.pm2_home, name)
                if os.path.exists(path):
                    os.chmod(path, 0o600)
