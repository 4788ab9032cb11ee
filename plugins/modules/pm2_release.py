#!/usr/bin/python
# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pm2_release
short_description: Unpack, activate or put back a release of a project's apps on a host
version_added: 0.1.0
description:
  - Manages the release layout of one project on one host, C(<path>/releases/<id>), C(<path>/current -> releases/<id>),
    C(<path>/shared/) and the activation history C(<path>/.release-history), and applies the project's apps through
    the backend of M(nodefleet.pm2.pm2_app) in the same call, so a deploy step costs one round trip per host.
  - O(state=present) unpacks the artifact O(src) (after checking its O(checksum)) into C(releases/.<id>.partial),
    links O(shared_dirs) and O(shared_links), then renames it to C(releases/<id>), so a release is complete or absent.
  - O(state=active) points C(current) at the release (a new link renamed over the old one), applies O(apps) (reload,
    scale or recreate; crash loops fail), probes the O(health) checks and records the outcome in the history,
    V(activated), or V(failed) when the apps or the checks fail (C(current) then still points at the failed release;
    put the previous one back with O(restore)).
  - O(restore=true) goes back after a failed step of this run (O(run)). The release being left is recorded
    V(rolled_back) when it was healthy here, and the release put back gets the apps it last ran healthy with (from
    the history), not O(apps); it is recorded V(restored).
  - O(rollback=true) without O(release) chooses the release, the newest one whose newest record is healthy, other
    than the current one and still on disk (RV(rollback_reason) says why); a release that failed is never chosen.
  - O(state=inactive) leaves no active release. The listed apps are stopped (still listed, with their logs; an app
    PM2 keeps restarting after the stop is deleted, RV(deleted)) and C(current) is removed. A first deploy that
    fails ends so.
  - O(state=active) compares the directory every live process of the apps runs in with the release. When C(current)
    stays, an app with a process elsewhere is reloaded (RV(off_current)), so a reload cut short converges.
  - In check mode nothing changes and the result says what would happen, RV(switched), per-app actions in RV(apps)
    (planned against the target release), RV(present), RV(locks) held on the host.
author:
  - nodefleet.pm2 contributors (@nodefleet)
extends_documentation_fragment:
  - nodefleet.pm2._pm2
  - nodefleet.pm2._release
  - nodefleet.pm2._attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The switch of C(current); per-app changes are in RV(apps).
options:
  release:
    description:
      - Release id, the directory name under C(releases/). Letters, digits, C(.), C(_), C(-); not starting with C(.).
      - May be empty with O(rollback=true) (chosen from the history) and with O(state=inactive).
    type: str
    default: ''
  state:
    description: V(present), V(active) or V(inactive), see the description.
    type: str
    default: active
    choices: [present, active, inactive]
  src:
    description: Artifact (C(.tar.gz)) on the host to unpack when the release is not there yet (O(state=present)).
    type: path
  checksum:
    description: Expected sha256 of O(src).
    type: str
  remove_src:
    description: Remove O(src) after unpacking.
    type: bool
    default: true
  owner:
    description: Owner of the unpacked files and of the shared directories (the apps' user).
    type: str
    default: root
  group:
    description: Group of the unpacked files; default the primary group of O(owner).
    type: str
  shared_dirs:
    description: Directories under C(<path>/shared/) linked into the release at the same relative path.
    type: list
    elements: str
    default: []
  shared_links:
    description: Extra links, path in the release -> target (an env file, for example).
    type: dict
    default: {}
  apps:
    description:
      - The project's apps on this host, as items of O(nodefleet.pm2.pm2_app#module:apps) (C(state=absent) for the
        project's apps this host no longer runs). Their release marker is the release's directory.
      - Not needed with O(restore) or O(rollback) when the history holds what the release ran with.
    type: list
    elements: dict
  health:
    description:
      - Checks probed after the apps were applied. Each C(name) plus C(url) (or C(port) and C(path) on 127.0.0.1),
        C(status) (default 200) and C(timeout), or a C(command) that must exit 0.
    type: list
    elements: dict
    default: []
  health_attempts:
    description: Probes per check before the call returns it in RV(health_pending) (or fails, with O(health_final)).
    type: int
    default: 3
  health_delay:
    description: Seconds between probes.
    type: float
    default: 0.5
  health_final:
    description:
      - Fail and record V(failed) when a check is still unhealthy after O(health_attempts). Without it the call returns
        the pending checks for the caller to wait on (visibly) and call again.
    type: bool
    default: false
  soak:
    description: Seconds to keep probing the checks and watching restart counts after a healthy activation (a canary).
    type: int
    default: 0
  keep:
    description: After a healthy activation, keep this many releases (never the current one nor the rollback target); 0 keeps all.
    type: int
    default: 0
  restore:
    description: Put a release back after a failed step of run O(run); see the description.
    type: bool
    default: false
  rollback:
    description: Choose the release from the history when O(release) is empty.
    type: bool
    default: false
  run:
    description: Id of the deploy run, recorded in the history.
    type: str
    default: ''
seealso:
  - module: nodefleet.pm2.pm2_app
  - module: nodefleet.pm2.pm2_release_info
  - module: nodefleet.pm2.pm2_deploy_lock
"""

EXAMPLES = r"""
---
- name: Unpack an uploaded artifact as release 3f2a9c0d1e8b
  nodefleet.pm2.pm2_release:
    path: /srv/shop
    release: 3f2a9c0d1e8b
    state: present
    src: /srv/shop/.incoming/3f2a9c0d1e8b.tar.gz
    checksum: "{{ artifact_sha256 }}"
    owner: app
    shared_dirs: [logs]

- name: Activate it and apply the apps, health-checked
  nodefleet.pm2.pm2_release:
    path: /srv/shop
    release: 3f2a9c0d1e8b
    user: app
    apps:
      - name: api
        script: /srv/shop/current/dist/server.js
        cwd: /srv/shop/current
        exec_mode: cluster
        instances: 2
    health:
      - {name: api, port: 3000, path: /health}
    keep: 5
"""

RETURN = r"""
strays:
  description:
    - Processes of an app this activation started, reloaded or restarted that PM2 no longer listed, stopped by the module
      (SIGINT, then SIGKILL after the app's C(kill_timeout)), by app name. PM2 has lost track of cluster workers
      (pm2 issues 6129, 5389); such a worker keeps taking its share of the app's connections with older code and
      could answer a health check for the new release.
    - A warning names them too.
  returned: when there were any
  type: dict
  sample: {"api": [4242]}
release:
  description: The release acted on (chosen from the history with O(rollback)).
  returned: always
  type: str
previous:
  description: The release C(current) pointed to before the call ('' for none).
  returned: always
  type: str
current:
  description: The release C(current) points to after the call (in check mode, before).
  returned: always
  type: str
switched:
  description: Whether C(current) is (or would be) switched.
  returned: state=active
  type: bool
present:
  description: Whether the release is on the host.
  returned: state=active
  type: bool
apps:
  description: Per app, as RV(nodefleet.pm2.pm2_app#module:apps) (name, action, actions, reasons, status).
  returned: state=active
  type: list
  elements: dict
apps_from:
  description: V(input) (O(apps)) or V(history) (what the release last ran healthy with).
  returned: state=active
  type: str
health:
  description: Per check name, C(healthy), C(detail) (what was seen), C(attempts).
  returned: state=active, outside check mode
  type: dict
health_pending:
  description: Checks still unhealthy after O(health_attempts) (the caller waits for them).
  returned: state=active, outside check mode
  type: list
  elements: str
on_disk:
  description: Release ids on the host.
  returned: always
  type: list
  elements: str
leftovers:
  description: Half-unpacked releases of interrupted runs (removed by the next pruning).
  returned: always
  type: list
  elements: str
history:
  description: The last 10 records of the history (release, outcome, time, run).
  returned: always
  type: list
  elements: dict
current_outcome:
  description: The newest outcome recorded for the current release ('' when none).
  returned: always
  type: str
rollback_target:
  description: The release a rollback goes to by default ('' when none).
  returned: always
  type: str
rollback_reason:
  description: Why that release (or why none).
  returned: always
  type: str
locks:
  description: Deploy lock files of O(project) on the host, by app.
  returned: when O(project) and O(lock_dir) are set
  type: dict
recorded:
  description: History records written by this call (release, outcome).
  returned: when a record was written
  type: list
  elements: dict
pruned:
  description: Releases removed by O(keep).
  returned: after a healthy activation with O(keep)
  type: list
  elements: str
stopped:
  description: Apps stopped by O(state=inactive).
  returned: state=inactive
  type: list
  elements: str
deleted:
  description:
    - Apps O(state=inactive) deleted from PM2 because they did not stay stopped (a crash-looping instance caught
      mid-restart by C(pm2 stop) is started again by PM2).
  returned: state=inactive
  type: list
  elements: str
off_current:
  description:
    - Apps with a live process outside the directory of the release C(current) points to, with the releases those
      processes run (an interrupted reload, a resurrect after a power cut). When the call keeps C(current), these
      apps are reloaded.
  returned: state=active, when C(current) is set
  type: dict
seconds:
  description: Time spent per phase (unpack, apply, health, soak).
  returned: always
  type: dict
step:
  description: The step that failed (apply, health, soak, stop).
  returned: failure
  type: str
failed_apps:
  description: Apps whose health check failed.
  returned: failure of a health check or the soak
  type: list
  elements: str
log_tails:
  description: On a failed apply, each failing app's crash report lines (see M(nodefleet.pm2.pm2_app)), by app name.
  returned: failure of apply
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodefleet.pm2.plugins.module_utils._options import release_argument_spec
from ansible_collections.nodefleet.pm2.plugins.module_utils._release_steps import run_release


def main():
    module = AnsibleModule(argument_spec=release_argument_spec(), supports_check_mode=True)
    run_release(module)


if __name__ == '__main__':
    main()
