# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The pure planner of systemd apps: wanted spec + live app + the unit text it should have -> actions and reasons.

Actions, in order: switch (remove the app from PM2 first: never both at once), install (write the unit +
daemon-reload), start, restart, scale, stop, delete."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_plan import Plan, make_plan

RUNNING = ('online', 'launching')


def unit_reasons(recorded: Dict[str, str], wanted: Dict[str, str], text_changed: bool) -> List[str]:
    """Names of the changed fields of a unit (fingerprint keys), or 'unit' when only the rendering changed."""
    fields = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
    if fields:
        return fields
    return ['unit'] if text_changed else []


def _plan_by_name(spec: Dict[str, Any], actual: Optional[Dict[str, Any]], searched: str) -> Plan:
    name, state = spec['name'], spec['state']
    if actual is None:
        if state == 'stopped':
            return make_plan(name)
        raise SpecError('script', 'app %s is not in %s, so script is required to create it' % (name, searched), name)
    active = [i for i in actual['instances'] if i['status'] in RUNNING]
    if state == 'stopped':
        return make_plan(name, ['stop'] if active or any(i['enabled'] for i in actual['instances']) else [],
                         ['status'] if active else [])
    if state in ('restarted', 'reloaded'):
        return make_plan(name, ['restart'], ['requested'])
    if state == 'started' and not active:
        return make_plan(name, ['start'], ['status'])
    return make_plan(name)


def _plan_new_unit(spec: Dict[str, Any], in_pm2: bool) -> Plan:
    """No unit yet: install it, and start it unless the app is to be stopped or only present."""
    name, state = spec['name'], spec['state']
    pre, pre_reasons = (['switch'], ['supervisor']) if in_pm2 else ([], [])
    if state == 'stopped':
        # Defined but not run: what PM2 gives for a stopped app that is switched over.
        return make_plan(name, pre + ['install'], pre_reasons + ['missing']) if in_pm2 else make_plan(name)
    if state == 'present' and not in_pm2:
        return make_plan(name, ['install'], ['missing'])
    return make_plan(name, pre + ['install', 'start'], pre_reasons + ['missing'])


def _drift(spec: Dict[str, Any], actual: Dict[str, Any], unit_text: Optional[str], env_digest_value: Optional[str],
           active: List[Dict[str, Any]]) -> List[str]:
    """Why the running app differs: unit fields, another release in any running instance, env file content."""
    reasons = []
    if actual['unit'] != unit_text:
        reasons += unit_reasons(actual['fingerprint'], spec['fingerprint'], True)
    if spec['release'] and any(i['release'] != spec['release'] for i in active):
        reasons.append('release')
    if spec['env_file'] and active and (env_digest_value is None or actual.get('env_digest') != env_digest_value):
        reasons.append('env_file_content')
    return reasons


def plan_systemd_app(spec: Dict[str, Any], actual: Optional[Dict[str, Any]], unit_text: Optional[str],
                     env_digest_value: Optional[str] = None, in_pm2: bool = False,
                     searched: str = 'the systemd units of this host') -> Plan:
    """Pure planner for a systemd app: desired spec + live app (or None) -> {'name', 'actions', 'reasons'}."""
    name, state = spec['name'], spec['state']
    if state == 'absent':
        # Gone from both supervisors.
        return make_plan(name, ['delete'] if actual or in_pm2 else [])
    if not spec['managed']:
        return _plan_by_name(spec, actual, searched)
    if actual is None or actual['unit'] is None:
        return _plan_new_unit(spec, in_pm2)
    return _plan_unit(spec, actual, unit_text, env_digest_value, in_pm2)


def _plan_unit(spec: Dict[str, Any], actual: Dict[str, Any], unit_text: Optional[str], env_digest_value: Optional[str],
               in_pm2: bool) -> Plan:
    """The unit exists: rewrite it when it differs, restart what runs another release or env, scale, stop."""
    state = spec['state']
    pre = ['switch'] if in_pm2 else []
    instances = actual['instances']
    active = [i for i in instances if i['status'] in RUNNING]
    install = ['install'] if actual['unit'] != unit_text else []
    reasons = (['supervisor'] if in_pm2 else []) + _drift(spec, actual, unit_text, env_digest_value, active)
    enabled_ids = {i['pm_id'] for i in instances if i['enabled']}
    if state == 'stopped' or not active:
        return _plan_not_running(spec, pre, install, reasons, bool(active), bool(enabled_ids))
    wanted_ids = set(range(spec['instances']))
    scale = {i['pm_id'] for i in active} != wanted_ids or (state != 'present' and not wanted_ids <= enabled_ids)
    return _plan_running(spec, pre + install, reasons, scale)


def _plan_not_running(spec: Dict[str, Any], pre: List[str], install: List[str], reasons: List[str], active: bool,
                      enabled: bool) -> Plan:
    """To be stopped (never started, not even to apply a change), or not running now."""
    name, state = spec['name'], spec['state']
    if state == 'stopped':
        return make_plan(name, pre + install + (['stop'] if active or enabled else []),
                         reasons if install or pre else (['status'] if active else []))
    if state == 'present':
        return make_plan(name, pre + install, reasons if install or pre else [])
    return make_plan(name, pre + install + ['start'], reasons + ['status'])


def _plan_running(spec: Dict[str, Any], actions: List[str], reasons: List[str], scale: bool) -> Plan:
    """Running instances: a restart for any drift (a fork process has no zero-downtime reload), then the count."""
    if spec['state'] in ('restarted', 'reloaded'):
        actions.append('restart')
        reasons = reasons or ['requested']
    elif reasons:
        actions.append('restart')
    if scale:
        actions.append('scale')
        reasons.append('instances')
    return make_plan(spec['name'], actions, reasons)
