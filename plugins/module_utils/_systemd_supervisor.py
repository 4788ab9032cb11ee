# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""systemd as a supervisor driver: resolves what a unit runs, renders and writes the template unit, plans (the
switch from PM2 included), runs systemctl, watches the instances settle and keeps the env-digest records in
/var/lib/nodefleet/systemd."""

from __future__ import annotations

import grp
import json
import os
from typing import Any, Dict, List, Optional

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import SpecError, atomic_write
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import SYSTEMD_IGNORED
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_supervisor import read_key
from ansible_collections.nodefleet.pm2.plugins.module_utils._report import LOG_LINES, describe, instance_word, squeeze
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd_plan import plan_systemd_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd_unit import (
    STATE_DIR,
    instance_unit,
    render_unit,
    state_path,
    unit_path,
)
from ansible_collections.nodefleet.pm2.plugins.module_utils._supervisor import READY, App, Plan, Spec, Supervisor, Waiting

NODE_SCRIPTS = ('.js', '.cjs', '.mjs')


class SystemdSupervisor(Supervisor):

    name = 'systemd'

    def __init__(self, run: Any) -> None:
        super().__init__(run)
        self.runner = run.systemd
        self.unit_texts: Dict[str, str] = {}

    # ------------------------------------------------------------- before any change
    def prepare(self, specs: List[Spec]) -> None:
        mine = [s for s in specs if s['supervisor'] == 'systemd']
        if mine:
            self.runner.require()
        for spec in mine:
            if not spec['managed']:
                continue
            spec['fingerprint'] = {k: v for k, v in spec['fingerprint'].items() if k not in SYSTEMD_IGNORED}
            try:
                spec['systemd'] = self._executables(spec)
            except SpecError as exc:
                raise exc.naming(spec['name']) from None
        for spec in mine:
            if spec['managed'] and spec['state'] != 'absent':
                self.unit_texts[spec['name']] = self._unit_text(spec)

    def _executables(self, spec: Spec) -> Dict[str, Optional[str]]:
        """What the unit runs, as absolute paths: the script (a file or a command in PATH) and its interpreter."""
        needed = spec['state'] != 'absent'
        script = spec['pm2']['script']
        if not os.path.isabs(script):
            found = self.run.module.get_bin_path(script)
            if not found and needed:
                raise SpecError('script', '%s is neither a path nor a command in PATH' % script)
            script = found or script
        interpreter = spec['pm2']['interpreter']
        if interpreter == 'none' or (interpreter is None and not script.endswith(NODE_SCRIPTS) and os.access(script, os.X_OK)):
            return {'interpreter': None, 'script': script}
        # node usually sits next to pm2 (nvm, npm prefix), as for the PM2 runner.
        pm2 = self.run.runner.pm2
        wanted = interpreter or 'node'
        path = wanted if os.path.isabs(wanted) else self.run.module.get_bin_path(wanted, opt_dirs=[os.path.dirname(pm2)] if pm2 else [])
        if not path and needed:
            raise SpecError('interpreter', '%s not found in PATH' % wanted)
        return {'interpreter': path, 'script': script}

    def _unit_text(self, spec: Spec) -> str:
        account = self.run.runner
        if account.uid == 0:
            raise SpecError('user', 'systemd apps run as a dedicated user, not root; set user')
        group = grp.getgrgid(account.gid).gr_name
        return render_unit(spec, account.user, group, spec['systemd']['interpreter'], spec['systemd']['script'])

    def read(self, specs: List[Spec]) -> None:
        # Asked only about apps it may hold: systemd ones and PM2 ones that may be switching back.
        names = [s['name'] for s in specs if s['supervisor'] == 'systemd' or os.path.exists(unit_path(s['name']))]
        self.live = self.runner.apps(names) if names else {}

    def digest_key(self) -> Optional[bytes]:
        if not self.run.check_mode:
            self.owned_dir(STATE_DIR, None)
        return read_key(STATE_DIR, not self.run.check_mode, None)

    def plan(self, spec: Spec, elsewhere: bool) -> Plan:
        name = spec['name']
        return plan_systemd_app(spec, self.live.get(name), self.unit_texts.get(name), self.run.digests.get(name),
                                in_pm2=elsewhere, searched=self.run.searched)

    def recorded_fingerprint(self, app: App) -> Dict[str, str]:
        return app['fingerprint']

    # ------------------------------------------------------------- changes
    def _enable(self, name: str, wanted: List[int], extra: List[int], restart: bool) -> None:
        units = [instance_unit(name, i) for i in wanted]
        # A unit that hit its start limit refuses to start until its failed state is reset.
        self.runner.try_run('reset-failed', '--', *units)
        if restart:
            self.runner.run('restart', '--', *units)
        self.runner.run('enable', '--now', '--', *units)
        if extra:
            self.runner.run('disable', '--now', '--', *[instance_unit(name, i) for i in extra])

    def apply(self, spec: Spec, plan: Plan) -> Optional[Waiting]:
        name = spec['name']
        app = self.live.get(name)
        known = {i['pm_id'] for i in app['instances']} if app else set()
        wanted = set(range(spec.get('instances') or len(known) or 1))
        started = False
        for action in plan['actions']:
            if action == 'switch':
                # Out of PM2 before systemd starts it: the two never run the app at once.
                self.other.remove(name)
            elif action == 'install':
                atomic_write(unit_path(name), self.unit_texts[name], 0o644)
                self.runner.run('daemon-reload')
            elif action in ('start', 'restart', 'scale'):
                self._enable(name, sorted(wanted), sorted(known - wanted), action == 'restart')
                started = True
            elif action == 'stop':
                self.runner.run('disable', '--now', '--', *[instance_unit(name, i) for i in sorted(known | wanted)])
        return Waiting(spec, self) if started else None

    def remove(self, name: str) -> None:
        """Stop, disable and forget every instance of the app's unit."""
        app = self.live.get(name)
        units = [instance_unit(name, i['pm_id']) for i in (app['instances'] if app else [])]
        if units:
            self.runner.run('disable', '--now', '--', *units)
            # A crash-looped instance stays listed as failed until reset; units already unloaded need nothing.
            self.runner.try_run('reset-failed', '--', *units)
        for path in (unit_path(name), state_path(name)):
            if os.path.exists(path):
                os.unlink(path)
        self.runner.run('daemon-reload')

    # ------------------------------------------------------------- readiness
    def poll(self, names: List[str]) -> Dict[str, App]:
        return self.runner.apps(names)

    def check(self, entry: Waiting, app: Optional[App], now: float) -> Optional[str]:
        """Every instance active with the same main PID for its settle time; a crash loop (an automatic restart, a
        failed unit or the start limit) fails. Then the env-file digest the instances started with is recorded."""
        want = entry.want(self.live)
        instances = [i for i in (app or {}).get('instances', []) if i['pm_id'] < want]
        seen = {i['pm_id']: (i['restart_time'], i['pid']) for i in instances}
        if entry.first is None:
            entry.first = seen
        restarted = [i for i in instances if i['restart_time'] > entry.first.get(i['pm_id'], (0,))[0]]
        if restarted or any(i['status'] in ('errored', 'waiting restart') for i in instances):
            return 'crashed'
        if len(instances) != want or not all(i['status'] == 'online' and i['pid'] for i in instances):
            entry.since = None
            return None
        if entry.since is None or entry.since[1] != seen:
            entry.since = (now, seen)
            return None
        if (now - entry.since[0]) * 1000 < entry.spec['settle_time']:
            return None
        if entry.spec['managed']:
            self.owned_dir(STATE_DIR, None)
            atomic_write(state_path(entry.name), json.dumps({'env_digest': self.run.digests.get(entry.name)}), 0o600)
        return READY

    def failure(self, entry: Waiting, why: str) -> Dict[str, Any]:
        """systemd's view: each instance's state and automatic restarts (NRestarts starts at 0 with every start the
        module asks for), systemd's own lines about the units, and the app's log files or this run's journal."""
        instances = entry.app['instances'] if entry.app else []
        rows = [{'label': instance_unit(entry.name, i['pm_id']), 'word': instance_word(i, i['restart_time']),
                 'restarts': i['restart_time']} for i in instances]
        units = [instance_unit(entry.name, i['pm_id']) for i in instances] or [instance_unit(entry.name, 0)]
        # This run's lines only: since the actions began (a second of slack for clock granularity); all when none ran.
        journal = self.runner.journal(units, 4 * LOG_LINES, self.run.applied_at - 1 if self.run.applied_at else None)
        logs = self.log_tails(instances) or {'journal (stdout, stderr and systemd)': [line for _own, line in journal][-LOG_LINES:]}
        reason = squeeze([line for own, line in journal if own])
        return describe(entry.name, 'systemd', why, rows, reason, logs)
