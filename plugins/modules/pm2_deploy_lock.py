#!/usr/bin/python
# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pm2_deploy_lock
short_description: Take or give back the deploy locks of a project's apps on a host
version_added: 0.1.0
description:
  - One lock file per app, C(<dir>/<project>.<app>.lock), created with C(O_EXCL) so two runs can never both hold it.
    It holds the run's O(owner) (token, controller, user, pid, start time) and the time it was taken.
  - O(state=present) takes the locks of every app in O(apps), all or nothing. A lock of the project held by another
    run (also one of an app no longer listed) refuses the whole take and is returned in RV(held). Locks older than
    O(ttl), unreadable ones and those whose token is in O(dead_tokens) are taken over and returned in RV(stolen).
  - O(state=absent) removes every lock of the project that carries C(owner.token); other runs' locks stay.
  - The role C(nodefleet.pm2.pm2_deploy) uses it; the C(nodefleet.pm2.pm2_watchdog) role holds off while a lock is held.
author:
  - nodefleet.pm2 contributors (@nodefleet)
extends_documentation_fragment:
  - nodefleet.pm2._attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode nothing is written; the result tells which locks are held by others.
  diff_mode:
    support: none
options:
  dir:
    description: Directory of the lock files.
    type: path
    default: /var/lib/nodefleet/deploy-locks
  project:
    description: Project name, the first part of each lock file's name.
    type: str
    required: true
  apps:
    description: App names to lock (O(state=present)) or to give back (O(state=absent); default all of the project's).
    type: list
    elements: str
    default: []
  owner:
    description: Who takes the lock. C(token) identifies the run; the other keys are shown to whoever is refused.
    type: dict
    required: true
  ttl:
    description: Seconds after which a lock is stale and taken over.
    type: int
    default: 3600
  dead_tokens:
    description: Tokens of runs known to be gone (their locks are taken over at once).
    type: list
    elements: str
    default: []
  state:
    description: V(present) takes the locks, V(absent) gives them back.
    type: str
    default: present
    choices: [present, absent]
"""

EXAMPLES = r"""
---
- name: Lock the apps of this host for this run
  nodefleet.pm2.pm2_deploy_lock:
    project: shop
    apps: [api, worker]
    owner: {token: 3f9a0c, controller: ci-1, user: deploy, pid: 4242, started: "2026-12-03T08:00:00Z"}
  register: lock

- name: Give them back
  nodefleet.pm2.pm2_deploy_lock:
    project: shop
    owner: {token: 3f9a0c}
    state: absent
"""

RETURN = r"""
taken:
  description: Apps whose lock this run holds now (O(state=present)).
  returned: always
  type: list
  elements: str
held:
  description: Locks held by another live run, by app; the take was refused when this is not empty.
  returned: always
  type: dict
stolen:
  description: Stale locks taken over, by app, with their former holder.
  returned: always
  type: dict
released:
  description: Apps whose lock was given back (O(state=absent)).
  returned: always
  type: list
  elements: str
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodefleet.pm2.plugins.module_utils._deploy_lock import (
    is_stale,
    project_locks,
    release,
    take,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            dir=dict(type='path', default='/var/lib/nodefleet/deploy-locks'),
            project=dict(type='str', required=True),
            apps=dict(type='list', elements='str', default=[]),
            owner=dict(type='dict', required=True),
            ttl=dict(type='int', default=3600),
            dead_tokens=dict(type='list', elements='str', default=[], no_log=False),
            state=dict(type='str', default='present', choices=['present', 'absent']),
        ),
        supports_check_mode=True,
    )
    params = module.params
    token = str(params['owner'].get('token') or '')
    if not token:
        module.fail_json(msg='owner.token: a lock needs the token of the run')
    result = dict(taken=[], held={}, stolen={}, released=[])
    try:
        if module.check_mode:
            now = time.time()
            for app, lock in project_locks(params['dir'], params['project']).items():
                if lock.get('token') != token and not is_stale(lock, params['ttl'], params['dead_tokens'], now):
                    result['held'][app] = lock
        elif params['state'] == 'present':
            result.update(take(params['dir'], params['project'], params['apps'], dict(params['owner'], token=token),
                               params['ttl'], set(params['dead_tokens'])))
        else:
            result['released'] = release(params['dir'], params['project'], token, params['apps'] or None)
    except OSError as exc:
        module.fail_json(msg='deploy locks in %s: %s' % (params['dir'], exc))
    # Bookkeeping of the run, not a change of what the host runs.
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
