# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Helpers shared by the scenarios' testinfra tests; importable as nodefleet_testinfra (PYTHONPATH set for the
verifier in .config/molecule/config.yml)."""

from __future__ import annotations

import json
import os

import testinfra
import testinfra.utils.ansible_runner

PM2 = "/usr/local/bin/pm2"
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
HOSTS = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("all")


def get_host(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def pm2(host, user, pm2_home, *args, executable=PM2):
    """Run pm2 as the PM2 user (never as root: that would start a root daemon in the user's PM2_HOME)."""
    cmd = host.run("runuser -u %s -- env -i PATH=/usr/bin:/bin PM2_HOME=%s PM2_DISCRETE_MODE=true %s" + " %s" * len(args),
                   user, pm2_home, executable, *args)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout


def jlist(host, user, pm2_home):
    """{app name: [processes]} without PM2 modules."""
    apps = {}
    for proc in json.loads(pm2(host, user, pm2_home, "jlist")):
        if not proc["pm2_env"].get("pmx_module"):
            apps.setdefault(proc["name"], []).append(proc)
    return apps
