#!/usr/bin/python
# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pm2_info
short_description: List the applications of a PM2 daemon and the user's systemd-supervised apps
version_added: 0.1.0
description:
  - Reads the process list of one PM2 daemon with a single C(pm2 jlist) and returns it grouped by application name.
  - Also lists the apps M(nodefleet.pm2.pm2_app) runs under systemd as O(user) (units C(nodefleet-<name>@.service)), in
    the same shape, each instance being one unit instance; RV(apps.supervisor) tells them apart.
  - PM2 modules (such as C(pm2-logrotate)) are left out. Environment values are never returned.
  - Never starts a PM2 daemon. Every pm2 command, C(pm2 jlist) included, starts one where none runs, so where none runs
    it runs no pm2 command (RV(pm2_calls) is 0) and reports no PM2 applications.
  - Tells restarts apart in RV(apps.crash_restarts), which leaves out those M(nodefleet.pm2.pm2_app) caused (a deploy's
    reloads), so a crash loop is not hidden among deploys.
author:
  - nodefleet.pm2 contributors (@nodefleet)
extends_documentation_fragment:
  - nodefleet.pm2._pm2
  - nodefleet.pm2._attributes
  - nodefleet.pm2._attributes.info_module
  - nodefleet.pm2._attributes.idempotent
attributes:
  idempotent:
    support: full
options:
  name:
    description:
      - Return only this application (same name rules as M(nodefleet.pm2.pm2_app)).
    type: str
seealso:
  - module: nodefleet.pm2.pm2_app
"""

EXAMPLES = r"""
---
- name: Read the PM2 process list of the deploy user
  nodefleet.pm2.pm2_info:
    user: deploy
  become: true
  register: pm2

- name: Check that every API instance is online
  ansible.builtin.assert:
    that:
      - pm2.apps.api.instances_online == pm2.apps.api.instances_total
"""

RETURN = r"""
apps:
  description: Applications by name.
  returned: always
  type: dict
  sample:
    api:
      name: api
      instances_online: 2
      instances_total: 2
      instances:
        - {pm_id: 0, pid: 4242, status: online, memory: 52428800, cpu: 0.3, restarts: 2, crash_restarts: 0, unstable_restarts: 0,
           uptime: 360000, release: /srv/api/releases/20250101T000000Z}
        - {pm_id: 1, pid: 4250, status: online, memory: 51380224, cpu: 0.1, restarts: 5, crash_restarts: 3, unstable_restarts: 0,
           uptime: 359000, release: /srv/api/releases/20250101T000000Z}
      restarts: 7
      crash_restarts: 3
      unstable_restarts: 0
      exec_mode: cluster
      script: /srv/api/current/dist/main.js
      cwd: /srv/api/current
      release: /srv/api/releases/20250101T000000Z
      recorded_release: /srv/api/releases/20250101T000000Z
      managed: true
      version: 1.4.0
      namespace: default
      conflict: false
  contains:
    name:
      description: Application name.
      type: str
    supervisor:
      description: V(pm2) or V(systemd).
      type: str
    instances_online:
      description: Number of processes with status V(online) and a process (PM2 can list an app online with pid V(0) that never ran).
      type: int
    instances_total:
      description: Number of processes with this name.
      type: int
    instances:
      description: One entry per process.
      type: list
      elements: dict
      contains:
        pm_id:
          description: PM2 process id.
          type: int
        pid:
          description: OS process id, V(0) when not running.
          type: int
        status:
          description:
            - PM2 status (V(online), V(stopped), V(errored), V(launching), V(waiting restart), ...); for a systemd unit
              instance the same words mapped from its active and sub state.
          type: str
        memory:
          description: Resident memory in bytes.
          type: int
        cpu:
          description: CPU usage in percent.
          type: float
        restarts:
          description:
            - Restart count kept by PM2, reloads and restarts by M(nodefleet.pm2.pm2_app) included (systemd's C(NRestarts)
              for a unit instance).
          type: int
        crash_restarts:
          description:
            - Restarts since M(nodefleet.pm2.pm2_app) last acted on the process (crashes, C(max_memory_restart), C(watch),
              C(cron_restart), restarts run by hand); all of RV(apps.instances.restarts) for a process it never acted on.
            - For a systemd unit instance, its automatic restarts (C(NRestarts) counts from the last start systemctl was asked for).
          type: int
        unstable_restarts:
          description: PM2's count of restarts within C(min_uptime) since the last start (PM2 marks the app errored at
            C(max_restarts)); V(null) for a systemd unit instance.
          type: int
        release:
          description:
            - The release this process runs - for PM2 the one M(nodefleet.pm2.pm2_app) started or reloaded it with
              (C(NODEFLEET_RELEASE) of this process), for systemd the real working directory of its main process.
            - Instances of one app on different releases show an interrupted reload.
          type: str
        uptime:
          description: Milliseconds since the process started; V(0) when not online.
          type: int
    restarts:
      description: RV(apps.instances.restarts) of all instances together.
      type: int
    crash_restarts:
      description: RV(apps.instances.crash_restarts) of all instances together; a deploy's reloads are not in it.
      type: int
    unstable_restarts:
      description: RV(apps.instances.unstable_restarts) of all instances together (V(null) under systemd).
      type: int
    exec_mode:
      description: V(fork) or V(cluster).
      type: str

    script:
      description: Absolute script path as PM2 stores it (symlinks not resolved).
      type: str
    cwd:
      description: Working directory as PM2 stores it.
      type: str
    release:
      description: Real path of RV(apps.cwd) resolved on the host now, which shows where a C(current) symlink points.
      type: str
    recorded_release:
      description:
        - Real path of the release when M(nodefleet.pm2.pm2_app) last started or reloaded the app, V(null) for apps it did
          not start. Differs from RV(apps.release) after a symlink flip that has not been reloaded yet.
        - For a systemd app, the real working directory of the running main process.
      type: str
    managed:
      description: Whether the app was started by M(nodefleet.pm2.pm2_app).
      type: bool
    version:
      description: Version from the app's nearest C(package.json), as PM2 reports it.
      type: str
    namespace:
      description: PM2 namespace.
      type: str
    conflict:
      description: Whether several processes share the name with different scripts or exec modes.
      type: bool
pm2_calls:
  description: Number of C(pm2) commands run (1, or 0 where no PM2 daemon runs).
  returned: always
  type: int
  sample: 1
systemctl_calls:
  description: Number of C(systemctl) commands run (0 where the user has no systemd apps).
  returned: always
  type: int
  sample: 0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import exit_with
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import pm2_info_argument_spec
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_info import read_apps


def main():
    module = AnsibleModule(argument_spec=pm2_info_argument_spec(), supports_check_mode=True)
    exit_with(module, lambda: read_apps(module, module.params))


if __name__ == '__main__':
    main()
