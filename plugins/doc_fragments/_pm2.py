# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this doc fragment is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

from __future__ import annotations


class ModuleDocFragment(object):

    # Options selecting which PM2 daemon is managed; shared by all modules of the collection.
    DOCUMENTATION = r"""
options:
  executable:
    description:
      - Path to the C(pm2) executable.
      - When not set, C(pm2) is looked up in E(PATH), C(/usr/local/bin) and C(/usr/bin).
      - C(node) is expected in the same directory as C(pm2) or in a standard system directory.
    type: path
  pm2_home:
    description:
      - The PM2 home directory (E(PM2_HOME)) of the daemon to manage.
      - Defaults to C(.pm2) in the home directory of O(user).
    type: path
  user:
    description:
      - OS user whose PM2 daemon is managed. PM2 commands run as this user through C(runuser).
      - Managing another user's daemon requires root (C(become=true)).
      - Defaults to the user the module runs as.
    type: str
notes:
  - Every C(pm2) command runs with a minimal environment (E(PATH), E(HOME), E(PM2_HOME), E(PM2_DISCRETE_MODE=true), E(LANG=C)),
    so no variable of the caller or of Ansible ends up in PM2's process records.
requirements:
  - PM2 (tested with 7.x) and Node.js on the managed host.
  - C(runuser) (util-linux) when O(user) differs from the connecting user.
"""
