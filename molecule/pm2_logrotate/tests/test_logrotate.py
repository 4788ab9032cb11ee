# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Node.js from Debian, logrotate without lost lines, pm2-logrotate configured without needless restarts."""

from __future__ import annotations

import json

from nodefleet_testinfra import HOSTS, jlist

testinfra_hosts = HOSTS
LOGS = "/home/web/.pm2/logs"


def test_node_and_npm_come_from_debian(host):
    assert host.package("nodejs").is_installed and host.package("npm").is_installed
    assert host.check_output("dpkg -S /usr/bin/node").startswith("nodejs")
    assert host.check_output("readlink /usr/local/bin/pm2") == "/opt/nodefleet/pm2/7.0.4/bin/pm2"
    for user in ("web", "legacy"):
        assert host.service(f"pm2-{user}.service").is_running


def test_logrotate_file_is_valid_and_rotates_as_the_app_user(host):
    conf = host.file("/etc/logrotate.d/logger")
    assert conf.user == "root" and conf.mode == 0o644
    assert "su web web" in conf.content_string and "copytruncate" in conf.content_string
    assert host.run("logrotate --debug /etc/logrotate.d/logger").rc == 0
    assert not host.file("/etc/logrotate.d/preflight-probe").exists
    assert host.service("logrotate.timer").is_enabled


def test_forced_rotations_lose_and_duplicate_no_line(host):
    files = host.check_output("ls %s", LOGS).split()
    # A fork app's log may carry its pm_id (logger-out-0.log); the role's default paths cover both forms.
    rotated = [f for f in files if f.startswith("logger-out") and ".log." in f]
    assert len(rotated) >= 6 and any(f.endswith(".gz") for f in rotated), files
    text = host.check_output("cd %s && zcat -f logger-out*.log*", LOGS)
    seqs = [int(line.split()[1]) for line in text.splitlines() if line.startswith("seq ")]
    print(f"{len(seqs)} lines in {len(rotated) + 1} files, last seq {max(seqs)}")
    assert len(seqs) > 5000
    assert len(seqs) == len(set(seqs)), "duplicated lines"
    assert sorted(seqs) == list(range(max(seqs) + 1)), "lost lines"


def test_pm2_logrotate_module_runs_with_the_wanted_settings(host):
    conf = json.loads(host.file("/home/legacy/.pm2/module_conf.json").content_string)["pm2-logrotate"]
    assert {k: conf[k] for k in ("max_size", "retain", "compress", "rotateInterval")} == {
        "max_size": "5M", "retain": "7", "compress": "true", "rotateInterval": "0 3 * * *"}
    modules = [p for p in json.loads(host.check_output(
        "runuser -u legacy -- env -i PATH=/usr/bin PM2_HOME=/home/legacy/.pm2 /usr/local/bin/pm2 jlist"))
        if p["pm2_env"].get("pmx_module")]
    assert [m["name"] for m in modules] == ["pm2-logrotate"] and modules[0]["pm2_env"]["status"] == "online"
    assert "legacy-api" in jlist(host, "legacy", "/home/legacy/.pm2")
