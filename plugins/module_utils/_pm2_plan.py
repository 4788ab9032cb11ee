# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The pure planner of PM2 apps: wanted spec + parsed live app -> actions and the reasons for them."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error, SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import (
    MARKER_ENV_DIGEST,
    MARKER_SPEC,
    RUNNING_STATUSES,
)
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import read_fingerprint

Plan = Dict[str, Any]


def make_plan(name: str, actions: Sequence[str] = (), reasons: Sequence[str] = ()) -> Plan:
    return {'name': name, 'actions': list(actions), 'reasons': list(reasons)}


def _classify(field: str, change: str) -> str:
    """'reload' or 'recreate' for a changed fingerprint field: PM2 applies new env values with an ecosystem reload;
    everything else (and a removed variable, which a reload keeps in the process) needs delete + start."""
    if field.startswith('env.'):
        return 'recreate' if change == 'removed' else 'reload'
    if field == 'env_file' and change == 'changed':
        return 'reload'
    return 'recreate'


def _fingerprint_changes(recorded: Dict[str, str], wanted: Dict[str, str], recreate: List[str], reload_: List[str]) -> None:
    for field in sorted(set(recorded) | set(wanted)):
        if field in recorded and field in wanted:
            change = 'changed' if recorded[field] != wanted[field] else None
        else:
            change = 'removed' if field in recorded else 'added'
        if not change or field in recreate:
            continue
        if _classify(field, change) == 'recreate':
            # Recreate wins when instances recorded different things (an interrupted reload).
            if field in reload_:
                reload_.remove(field)
            recreate.append(field)
        elif field not in reload_:
            reload_.append(field)


def diff_app(spec: Dict[str, Any], actual: Dict[str, Any], env_digest_value: Optional[str] = None) -> Tuple[List[str], List[str], bool]:
    """Compare a managed spec with the live app -> (recreate_reasons, reload_reasons, scale).

    Every instance is compared, not one per app: after an interrupted reload some processes of a cluster app run
    another release or spec than the others, and the app is reloaded until they all agree."""
    recreate: List[str] = []
    reload_: List[str] = []
    pm2 = spec['pm2']
    if os.path.isabs(pm2['script']) and actual['script'] != pm2['script']:
        recreate.append('script')
    if pm2['cwd'] is not None and actual['cwd'] != pm2['cwd']:
        recreate.append('cwd')
    if actual['exec_mode'] != pm2['exec_mode']:
        recreate.append('exec_mode')
    if actual['namespace'] != (pm2['namespace'] or 'default'):
        recreate.append('namespace')
    markers = [i['markers'] for i in actual['instances']]
    if any(m[MARKER_SPEC] is None for m in markers):
        recreate.append('unmanaged')
    else:
        for recorded in sorted({m[MARKER_SPEC] for m in markers}):
            _fingerprint_changes(read_fingerprint(recorded), spec['fingerprint'], recreate, reload_)
    if spec['release'] and any(i['release'] != spec['release'] for i in actual['instances']):
        reload_.append('release')
    if spec['env_file'] and (env_digest_value is None or any(m[MARKER_ENV_DIGEST] != env_digest_value for m in markers)):
        reload_.append('env_file_content')
    scale = len(actual['instances']) != spec['instances']
    return recreate, reload_, scale


def _plan_by_name(spec: Dict[str, Any], running: bool, idle: bool) -> Plan:
    """Name-only form: act on the app as it is."""
    name, state = spec['name'], spec['state']
    if state == 'stopped':
        return make_plan(name, [] if idle else ['stop'], [] if idle else ['status'])
    if state in ('restarted', 'reloaded'):
        return make_plan(name, [state[:-2]], ['requested'])
    if state == 'started' and not running:
        return make_plan(name, ['start'], ['status'])
    return make_plan(name)


def _plan_managed(spec: Dict[str, Any], actual: Dict[str, Any], env_digest_value: Optional[str], running: bool, idle: bool) -> Plan:
    name, state = spec['name'], spec['state']
    recreate, reload_, scale = diff_app(spec, actual, env_digest_value)
    reasons = recreate + reload_ + (['instances'] if scale else [])
    drift = bool(reasons)
    if state == 'stopped':
        # Never start what should be stopped (a cron app could run a job): drift waits for the next start.
        return make_plan(name, [] if idle else ['stop'], [] if idle else ['status'])
    if state == 'present' and idle:
        # PM2 cannot redefine an app without starting it: apply the change, then stop it again.
        return make_plan(name, ['recreate', 'stop'] if drift else [], reasons)
    if recreate:
        return make_plan(name, ['recreate'], reasons)
    if not running:
        # A stopped or errored app with changes is recreated so it starts with the new spec.
        return make_plan(name, ['recreate'], reasons) if drift else make_plan(name, ['start'], ['status'])
    actions = []
    if state in ('restarted', 'reloaded'):
        actions.append(state[:-2])
        reasons = reasons or ['requested']
    elif reload_:
        actions.append('reload')
    if scale:
        actions.append('scale')
    return make_plan(name, actions, reasons)


def plan_app(spec: Dict[str, Any], actual: Optional[Dict[str, Any]], env_digest_value: Optional[str] = None,
             searched: str = 'this PM2 daemon') -> Plan:
    """Pure planner: wanted spec + parsed live app (or None) -> {'name', 'actions', 'reasons'}."""
    state = spec['state']
    name = spec['name']
    if actual is not None and actual['conflict']:
        raise Pm2Error('app %s: several processes share this name with different scripts or exec modes; '
                       'refusing to act on it - delete the stray processes first' % name, app=name)
    if actual is None:
        if state in ('absent', 'stopped'):
            return make_plan(name)
        if not spec['managed']:
            raise SpecError('script', 'app %s is not in %s, so script is required to create it' % (name, searched), name)
        return make_plan(name, ['start'], ['missing'])
    if state == 'absent':
        return make_plan(name, ['delete'])
    statuses = [i['status'] for i in actual['instances']]
    running = all(s in RUNNING_STATUSES for s in statuses)
    idle = all(s == 'stopped' for s in statuses)
    if not spec['managed']:
        return _plan_by_name(spec, running, idle)
    return _plan_managed(spec, actual, env_digest_value, running, idle)
