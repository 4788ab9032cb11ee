#!/usr/bin/python
# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pm2_release_info
short_description: Read a project's releases, activation history, deploy locks and running apps on a host
version_added: 0.1.0
description:
  - Reads the release layout that M(nodefleet.pm2.pm2_release) manages (C(current), C(releases/), the activation
    history with each release's outcome, the default rollback target and why) and the apps of the PM2 daemon and the
    systemd units of O(user), as M(nodefleet.pm2.pm2_info) returns them, in one call.
  - Never starts a PM2 daemon.
author:
  - nodefleet.pm2 contributors (@nodefleet)
extends_documentation_fragment:
  - nodefleet.pm2._pm2
  - nodefleet.pm2._release
  - nodefleet.pm2._attributes
  - nodefleet.pm2._attributes.info_module
  - nodefleet.pm2._attributes.idempotent
attributes:
  idempotent:
    support: full
seealso:
  - module: nodefleet.pm2.pm2_release
  - module: nodefleet.pm2.pm2_info
"""

EXAMPLES = r"""
---
- name: What does this host run?
  nodefleet.pm2.pm2_release_info:
    path: /srv/shop
    user: app
  register: shop

- name: Every app runs the release current points to
  ansible.builtin.assert:
    that: shop.apps | dict2items | map(attribute='value.release') | reject('equalto', '/srv/shop/releases/' ~ shop.current) | list | length == 0
"""

RETURN = r"""
current:
  description: The release C(current) points to ('' for none).
  returned: always
  type: str
previous:
  description: Same as RV(current) (the shape of M(nodefleet.pm2.pm2_release)'s result).
  returned: always
  type: str
current_outcome:
  description: The newest outcome recorded for the current release (activated, restored, failed, rolled_back; '' when none).
  returned: always
  type: str
on_disk:
  description: Release ids on the host.
  returned: always
  type: list
  elements: str
leftovers:
  description: Half-unpacked releases of interrupted runs.
  returned: always
  type: list
  elements: str
history:
  description: The last 10 records of the history (release, outcome, time, run).
  returned: always
  type: list
  elements: dict
rollback_target:
  description: The release a rollback goes to by default ('' when none).
  returned: always
  type: str
rollback_reason:
  description: Why that release (or why none).
  returned: always
  type: str
locks:
  description: Deploy lock files of O(project), by app.
  returned: when O(project) and O(lock_dir) are set
  type: dict
apps:
  description:
    - The running apps by name, as RV(nodefleet.pm2.pm2_info#module:apps), each with C(running_releases), the
      releases its live processes really run in (from each process's working directory; a path when outside
      C(releases/)).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodefleet.pm2.plugins.module_utils._options import release_info_argument_spec
from ansible_collections.nodefleet.pm2.plugins.module_utils._release_steps import run_release_info


def main():
    module = AnsibleModule(argument_spec=release_info_argument_spec(), supports_check_mode=True)
    run_release_info(module)


if __name__ == '__main__':
    main()
