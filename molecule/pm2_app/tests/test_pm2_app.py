# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""After the cases: the apps run as their user, PM2's records hold no secret, the dump is private."""

from __future__ import annotations

import json

from nodefleet_testinfra import pm2 as run_pm2

SECRET = "s3cr3t-sentinel-7f3a"
PM2_HOME = "/home/app/.pm2"


def pm2(host, *args):
    # PM2 as this scenario installs it (npm, /usr/bin), not the pinned one of pm2_runtime.
    return run_pm2(host, "app", PM2_HOME, *args, executable="pm2")


def test_expected_apps_online_with_their_counts(host):
    procs = json.loads(pm2(host, "jlist"))
    counts = {}
    for proc in procs:
        if proc["pm2_env"]["status"] == "online":
            counts[proc["name"]] = counts.get(proc["name"], 0) + 1
    assert counts == {"web": 2, "api": 2, "worker": 1, "ws": 1, "admin": 1, "slow": 2}


def test_processes_run_as_the_app_user(host):
    rows = [line.split(None, 1) for line in host.check_output("ps -eo user=,args=").splitlines()]
    pm2_rows = [(user, args) for user, args in rows if args.startswith("PM2 v") or "/srv/" in args]
    assert len(pm2_rows) >= 2  # the daemon and at least one app
    assert {row[0] for row in pm2_rows} == {"app"}, pm2_rows


def test_secret_from_env_file_reached_the_app_but_no_pm2_record(host):
    assert json.loads(host.check_output("curl -s http://127.0.0.1:3001/env"))["APP_SECRET"] == SECRET
    assert SECRET not in pm2(host, "jlist")
    assert SECRET not in host.check_output("ps -eo args")
    assert host.run("grep -rl %s %s", SECRET, PM2_HOME).rc == 1  # dump.pm2, logs, module files


def test_dump_and_state_are_private(host):
    assert host.file(f"{PM2_HOME}/dump.pm2").mode == 0o600
    assert host.file(f"{PM2_HOME}/dump.pm2").user == "app"
    assert host.file(f"{PM2_HOME}/nodefleet").mode == 0o700
    assert host.file("/etc/nodefleet/env/app/web.env").mode == 0o600
