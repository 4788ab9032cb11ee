#!/usr/bin/python
# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_servers
short_description: Drain servers out of HAProxy backends, or put them back, in one call
version_added: 0.1.0
description:
  - Talks to HAProxy's admin socket on the load balancer host. Run it there (for a deploy, C(delegate_to) the LB host).
  - O(state=drained) puts every listed server in maintenance (no new requests; requests in flight go on), then waits
    until none of them has a session left, then waits O(grace) seconds more for requests already forwarded.
    Unlike waiting for HAProxy's C(DRAIN) status, this also works for a server that is C(DOWN) (a first deploy).
  - O(state=enabled) takes every listed server out of maintenance and waits until each is C(UP) again (or
    C(no check) when the backend has no health check).
  - All servers are handled together, so draining the backends of several apps costs one round trip.
author:
  - nodefleet.pm2 contributors (@nodefleet)
extends_documentation_fragment:
  - nodefleet.pm2._attributes
  - nodefleet.pm2._attributes.idempotent
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  servers:
    description:
      - The servers to act on.
    type: list
    elements: dict
    required: true
    suboptions:
      backend:
        description: HAProxy backend name.
        type: str
        required: true
      server:
        description: Server name inside the backend.
        type: str
        required: true
  state:
    description:
      - V(drained) puts the servers in maintenance and waits until their sessions are gone.
      - V(enabled) takes them out of maintenance and waits until they are C(UP).
    type: str
    required: true
    choices: [drained, enabled]
  socket:
    description: Path of HAProxy's admin socket (C(stats socket ... level admin)).
    type: path
    default: /run/haproxy/admin.sock
  timeout:
    description: Seconds to wait for the sessions to end (V(drained)) or for C(UP) (V(enabled)).
    type: int
    default: 30
  grace:
    description: Seconds to wait after the last session ended, for requests already forwarded (V(drained) only).
    type: float
    default: 1
seealso:
  - name: HAProxy management guide, runtime API
    description: The C(set server) and C(show stat) commands this module uses.
    link: https://docs.haproxy.org/2.6/management.html#9.3
"""

EXAMPLES = r"""
---
- name: Drain this host out of two backends before its apps reload
  nodefleet.pm2.haproxy_servers:
    state: drained
    servers:
      - {backend: api, server: "{{ inventory_hostname }}"}
      - {backend: web, server: "{{ inventory_hostname }}"}
  delegate_to: lb1

- name: Put it back and wait until HAProxy sees it UP
  nodefleet.pm2.haproxy_servers:
    state: enabled
    servers:
      - {backend: api, server: "{{ inventory_hostname }}"}
      - {backend: web, server: "{{ inventory_hostname }}"}
  delegate_to: lb1
"""

RETURN = r"""
servers:
  description: Each server with its status before and after.
  returned: always
  type: list
  elements: dict
  sample: [{backend: api, server: web1, before: UP, after: MAINT, sessions: 0}]
seconds:
  description: Time spent waiting (sessions to end plus grace, or servers to come up).
  returned: always
  type: float
  sample: 1.3
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodefleet.pm2.plugins.module_utils._haproxy import (
    AdminSocket,
    HAProxyError,
    base_status,
    missing,
    wait_until,
)

TARGET = {'drained': 'maint', 'enabled': 'ready'}


def run(module: AnsibleModule) -> dict:
    params = module.params
    admin = AdminSocket(params['socket'])
    wanted = [(s['backend'], s['server']) for s in params['servers']]
    before = admin.servers()
    unknown = missing(before, wanted)
    if unknown:
        raise HAProxyError('servers: not in HAProxy: %s' % ', '.join(unknown))
    draining = params['state'] == 'drained'
    to_change = [pair for pair in wanted if (base_status(before[pair]['status']) == 'MAINT') != draining]
    started = time.time()
    after = before
    if not module.check_mode:
        for backend, server in to_change:
            admin.set_state(backend, server, TARGET[params['state']])
        if draining:
            ok, after = wait_until(admin, wanted, lambda s: s['sessions'] == 0, params['timeout'])
            if not ok:
                busy = ['%s/%s (%d sessions)' % (b, s, after[(b, s)]['sessions']) for b, s in wanted if after[(b, s)]['sessions']]
                raise HAProxyError('sessions did not end within %ss: %s' % (params['timeout'], ', '.join(busy)))
            if to_change and params['grace'] > 0:
                time.sleep(params['grace'])
        else:
            ok, after = wait_until(admin, wanted, lambda s: base_status(s['status']) in ('UP', 'no check'), params['timeout'])
            if not ok:
                down = ['%s/%s is %s' % (b, s, after[(b, s)]['status']) for b, s in wanted
                        if base_status(after[(b, s)]['status']) not in ('UP', 'no check')]
                raise HAProxyError('not UP within %ss: %s' % (params['timeout'], ', '.join(down)))
    servers = [dict(backend=b, server=s, before=before[(b, s)]['status'], after=after[(b, s)]['status'],
                    sessions=after[(b, s)]['sessions']) for b, s in wanted]
    return dict(changed=bool(to_change), servers=servers, seconds=round(time.time() - started, 2))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            servers=dict(type='list', elements='dict', required=True, options=dict(
                backend=dict(type='str', required=True),
                server=dict(type='str', required=True),
            )),
            state=dict(type='str', required=True, choices=['drained', 'enabled']),
            socket=dict(type='path', default='/run/haproxy/admin.sock'),
            timeout=dict(type='int', default=30),
            grace=dict(type='float', default=1),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except HAProxyError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == '__main__':
    main()
