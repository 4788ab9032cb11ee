# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a systemd-supervised app looks like on a host after converge and the side effects."""

from __future__ import annotations

import re

SECRET = "s3cr3t-systemd-sentinel-4b1d"
UNIT = "/etc/systemd/system/nodefleet-sweb@.service"


def _main_pid(host, unit):
    return int(host.check_output("systemctl show -p MainPID --value %s", unit))


def test_unit_file_is_root_owned_world_readable_and_holds_no_secret(host):
    unit = host.file(UNIT)
    assert unit.user == "root" and unit.mode == 0o644
    assert SECRET not in unit.content_string
    assert "EnvironmentFile=/etc/nodefleet/env/app/sweb.env" in unit.content_string


def test_unit_runs_as_the_app_user_with_hardening(host):
    text = host.file(UNIT).content_string
    for line in ("User=app", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=full", "KillSignal=SIGINT",
                 "Restart=always", "RestartSec=500ms", "TimeoutStopSec=3000ms", "MemoryMax=209715200"):
        assert line in text.splitlines(), line
    assert "MemoryDenyWriteExecute" not in text  # V8's JIT needs writable executable memory


def test_restart_policy_maps_max_restarts_and_min_uptime(host):
    text = host.file("/etc/systemd/system/nodefleet-sworker@.service").content_string
    # 5 restarts + the first start, each within min_uptime 2 s + RestartSec 100 ms.
    assert "StartLimitBurst=6" in text.splitlines()
    assert "StartLimitIntervalSec=12600ms" in text.splitlines()


def test_process_runs_unprivileged_with_no_new_privileges(host):
    pid = _main_pid(host, "nodefleet-sweb@0.service")
    status = host.check_output("cat /proc/%s/status" % pid)
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE)
    assert host.check_output("ps -o user= -p %s", str(pid)) == "app"


def test_secret_reaches_the_app_but_not_systemd_records_or_ps(host):
    pid = _main_pid(host, "nodefleet-sweb@0.service")
    with host.sudo():
        environ = host.check_output("tr '\\0' '\\n' < /proc/%s/environ" % pid)
    assert "APP_SECRET=" + SECRET in environ.splitlines()
    assert SECRET not in host.check_output("systemctl show nodefleet-sweb@0.service")
    assert SECRET not in host.check_output("ps auxww")
    assert SECRET not in host.check_output("systemctl cat nodefleet-sweb@0.service")


def test_env_file_and_state_are_private(host):
    assert host.file("/etc/nodefleet/env/app/sweb.env").mode == 0o600
    state = host.file("/var/lib/nodefleet/systemd")
    assert state.mode == 0o700 and state.user == "root"
    assert SECRET not in host.file("/var/lib/nodefleet/systemd/sweb.json").content_string


def test_worker_instances_log_to_their_files(host):
    assert host.service("nodefleet-sworker@0.service").is_running
    assert host.service("nodefleet-sworker@1.service").is_enabled
    assert "listening on 3210" in host.file("/var/log/sworker/out.log").content_string
    assert "listening on 3211" in host.file("/var/log/sworker/out.log").content_string


def test_instance_id_reaches_the_app(host):
    reply = host.check_output("curl -s http://127.0.0.1:3211/")
    assert '"instance":"1"' in reply


def test_removed_apps_left_nothing_behind(host):
    for name in ("snew", "scrash", "slate", "sswitch"):
        assert not host.file("/etc/systemd/system/nodefleet-%s@.service" % name).exists
    # Their template slices linger until systemd collects them; no service instance may.
    assert "nodefleet-scrash" not in host.check_output("systemctl list-units --all --plain --no-legend --type=service")
