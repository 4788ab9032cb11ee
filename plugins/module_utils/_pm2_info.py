# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_info: the apps of one PM2 daemon and the user's systemd apps, grouped by name, never env values; restarts
split into those pm2_app caused and the others (crashes, memory limit, watch, cron, hand-run restarts)."""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional

from ansible_collections.nodefleet.pm2.plugins.module_utils._options import validate_name
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import MARKER_SPEC, Pm2Runner, is_running
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_supervisor import read_restart_baseline
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd import SystemdRunner

App = Dict[str, Any]


def crash_restarts(instance: Dict[str, Any], baseline: Optional[Dict[str, int]]) -> int:
    """Restarts since pm2_app last acted on the process (all of them when it never did, or PM2 reset the count)."""
    count = instance['restart_time']
    recorded = (baseline or {}).get(str(instance['pm_id']))
    return count - recorded if isinstance(recorded, int) and 0 <= recorded <= count else count


def describe(supervisor: str, app: App, now_ms: int, baseline: Optional[Dict[str, int]]) -> Dict[str, Any]:
    instances = []
    for i in app['instances']:
        instances.append(dict(
            pm_id=i['pm_id'], pid=i['pid'], status=i['status'], memory=i['memory'], cpu=i['cpu'],
            restarts=i['restart_time'],
            # systemd's NRestarts counts automatic restarts only, from the last start it was asked for.
            crash_restarts=crash_restarts(i, baseline) if supervisor == 'pm2' else i['restart_time'],
            unstable_restarts=i['unstable_restarts'] if supervisor == 'pm2' else None,
            uptime=max(0, now_ms - i['pm_uptime']) if i['status'] == 'online' and i['pm_uptime'] else 0,
            release=i['release'],
        ))
    cwd = app['cwd']
    return dict(
        name=app['name'],
        supervisor=supervisor,
        instances_online=sum(1 for i in app['instances'] if is_running(i)),
        instances_total=len(instances),
        instances=instances,
        restarts=sum(i['restarts'] for i in instances),
        crash_restarts=sum(i['crash_restarts'] for i in instances),
        unstable_restarts=sum(i['unstable_restarts'] for i in instances) if supervisor == 'pm2' else None,
        exec_mode=app['exec_mode'],
        script=app['script'],
        cwd=cwd,
        release=os.path.realpath(cwd) if cwd else None,
        recorded_release=app['recorded_release'],
        managed=(app['unit'] is not None) if supervisor == 'systemd' else app['markers'].get(MARKER_SPEC) is not None,
        version=app['version'],
        namespace=app['namespace'],
        conflict=app['conflict'],
    )


def read_apps(module: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    """pm2_info's result. PM2 is read only where its daemon runs: pm2 jlist would start one."""
    name = params['name']
    if name is not None:
        validate_name(name)
    runner = Pm2Runner(module, **{k: params[k] for k in ('executable', 'pm2_home', 'user')})
    systemd = SystemdRunner(module)
    now_ms = int(time.time() * 1000)
    baselines = read_restart_baseline(runner.pm2_home)
    apps = {}
    for app_name, app in runner.jlist(spawn=False).items():
        if name is None or app_name == name:
            apps[app_name] = describe('pm2', app, now_ms, baselines.get(app_name))
    # systemd apps of this user, in the same shape (status table, health): one supervisor column apart.
    units = [n for n in systemd.managed_names() if name is None or n == name]
    for app_name, app in (systemd.apps(units) if units else {}).items():
        if app['user'] == runner.user:
            apps[app_name] = describe('systemd', app, now_ms, None)
    return dict(changed=False, apps=apps, pm2_calls=runner.calls, systemctl_calls=systemd.calls)
