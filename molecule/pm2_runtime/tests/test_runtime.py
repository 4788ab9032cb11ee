# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pm2_runtime: pinned PM2, private PM2_HOME per user, a systemd unit per daemon, apps back after reboot and power cut."""

from __future__ import annotations

import json

import pytest
from nodefleet_testinfra import HOSTS, jlist

testinfra_hosts = HOSTS
USERS = {"web": "/home/web/.pm2", "jobs": "/srv/jobs/pm2"}
EXPECTED = {"web": {"web-api": ("cluster_mode", 2), "web-worker": ("fork_mode", 1)}, "jobs": {"jobs-cron": ("fork_mode", 1)}}


def test_pm2_is_the_pinned_version(host):
    assert host.check_output("readlink /usr/local/bin/pm2") == "/opt/nodefleet/pm2/7.0.4/bin/pm2"
    package = json.loads(host.file("/opt/nodefleet/pm2/7.0.4/lib/node_modules/pm2/package.json").content_string)
    assert package["version"] == "7.0.4"


@pytest.mark.parametrize("user", USERS)
def test_user_without_login_shell_and_private_pm2_home(host, user):
    account = host.user(user)
    assert account.exists and account.shell == "/usr/sbin/nologin"
    home = host.file(USERS[user])
    assert home.is_directory and home.user == user and home.mode == 0o700
    for dump in ("dump.pm2", "dump.pm2.bak"):
        if host.file(f"{USERS[user]}/{dump}").exists:
            assert host.file(f"{USERS[user]}/{dump}").mode == 0o600


@pytest.mark.parametrize("user", USERS)
def test_unit_runs_the_daemon_with_an_explicit_environment(host, user):
    unit = f"pm2-{user}.service"
    assert host.service(unit).is_enabled and host.service(unit).is_running
    props = dict(line.split("=", 1) for line in host.check_output(
        "systemctl show %s -p Type -p User -p PIDFile -p Restart -p Environment -p MainPID", unit).splitlines())
    assert props["Type"] == "forking" and props["User"] == user and props["Restart"] == "on-failure"
    assert props["PIDFile"] == f"{USERS[user]}/pm2.pid"
    assert f"PM2_HOME={USERS[user]}" in props["Environment"]
    assert "PATH=/usr/bin:/usr/local/bin:/bin" in props["Environment"]
    # The daemon is the unit's main process, so systemd supervises it and stops it at shutdown.
    assert host.file(f"{USERS[user]}/pm2.pid").content_string.strip() == props["MainPID"]


@pytest.mark.parametrize("user", USERS)
def test_every_app_runs_with_its_instance_count_inside_the_unit(host, user):
    apps = jlist(host, user, USERS[user])
    assert set(apps) == set(EXPECTED[user])
    for name, (mode, count) in EXPECTED[user].items():
        procs = apps[name]
        assert len(procs) == count, name
        assert all(p["pm2_env"]["status"] == "online" and p["pm2_env"]["exec_mode"] == mode for p in procs), name
        for proc in procs:
            assert f"pm2-{user}.service" in host.file(f"/proc/{proc['pid']}/cgroup").content_string, name


def test_reboot_and_power_cut_really_happened(host):
    # node2 was rebooted and node3 lost power after the marker was written: /run is empty again there.
    rebooted = host.backend.get_hostname() in ("node2", "node3")
    assert host.file("/run/boot-marker").exists is not rebooted
