# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this doc fragment is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

from __future__ import annotations


class ModuleDocFragment:

    # The project a release module reads (pm2_release, pm2_release_info): _options.release_info_argument_spec().
    DOCUMENTATION = r"""
options:
  path:
    description: The project's base directory on the host.
    type: path
    required: true
  project:
    description: Project name, to report its deploy locks (with O(lock_dir)).
    type: str
  lock_dir:
    description: Directory of the deploy locks (see M(nodefleet.pm2.pm2_deploy_lock)).
    type: path
"""
