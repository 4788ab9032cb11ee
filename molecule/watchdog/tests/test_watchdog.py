# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""After side_effect: the watchdog's files and units as the role left them, its state, the metrics endpoint."""

from __future__ import annotations

import json
import os

import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
testinfra_hosts = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("prod")


def test_the_secrets_file_is_root_only(host):
    config = host.file("/etc/nodefleet/watchdog/config.json")
    assert (config.user, config.group, config.mode) == ("root", "root", 0o600)
    directory = host.file("/etc/nodefleet/watchdog")
    assert (directory.user, directory.mode) == ("root", 0o700)
    for unit in ("nodefleet-pm2-watchdog.service", "nodefleet-pm2-metrics.service"):
        text = host.file(f"/etc/systemd/system/{unit}").content_string
        assert "config.json" in text and "Environment" not in text


def test_timers_run_the_passes(host):
    for name in ("nodefleet-pm2-watchdog", "nodefleet-pm2-metrics"):
        timer = host.service(f"{name}.timer")
        assert timer.is_enabled and timer.is_running
        assert host.run(f"systemctl show -p Result --value {name}.service").stdout.strip() == "success"
    assert "OnUnitActiveSec=2s" in host.file("/etc/systemd/system/nodefleet-pm2-watchdog.timer").content_string


def test_every_app_is_healthy_again_and_no_lock_is_left(host):
    state = json.loads(host.file("/var/lib/nodefleet/watchdog/state.json").content_string)
    assert sorted(state["apps"]) == ["api", "notify", "worker"]
    for name, app in state["apps"].items():
        assert app["healthy"] and app["failures"] == 0 and not app["alerted"] and not app["held"], (name, app)
    assert state["outbox"] == [] and state["alert_errors"] == {}
    assert host.run("ls /var/lib/nodefleet/deploy-locks/*.lock").rc != 0


def test_node_exporter_serves_the_metrics(host):
    assert host.service("prometheus-node-exporter").is_running
    text = host.check_output("curl -fsS 'http://127.0.0.1:9100/metrics?collect[]=textfile'")
    lines = [line for line in text.splitlines() if line.startswith("nodefleet_pm2_process_up{")]
    assert len(lines) == 4  # api x2, worker, notify
    assert 'node_textfile_scrape_error 0' in text
    for metric in ("nodefleet_pm2_watchdog_heals_total", "nodefleet_pm2_watchdog_run_cpu_seconds",
                   "nodefleet_pm2_metrics_run_max_rss_bytes", "nodefleet_pm2_release_info"):
        assert metric in text


def test_the_watchdog_journal_holds_transitions_only(host):
    """LogLevelMax=notice: no per-pass Started/Finished lines, only what changed."""
    lines = host.check_output("journalctl -u nodefleet-pm2-watchdog.service -o cat --no-pager").splitlines()
    assert lines, "the watchdog logged nothing"
    assert not [line for line in lines if line.startswith(("Started ", "Finished ", "Starting ", "nodefleet-pm2"))]
    assert [line for line in lines if ": failing (" in line]
