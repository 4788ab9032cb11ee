# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet behaves like separate real servers: own identity, systemd, isolation, reboots, Debian services."""

from __future__ import annotations

import os
import urllib.request

import pytest
import testinfra
import testinfra.utils.ansible_runner

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
HOSTS = testinfra.utils.ansible_runner.AnsibleRunner(INVENTORY).get_hosts("all")
testinfra_hosts = HOSTS


def all_hosts():
    return {name: testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}") for name in HOSTS}


def test_three_hosts_with_distinct_hostnames_and_addresses():
    hosts = all_hosts()
    assert len(hosts) == 3
    names = {h.check_output("hostname") for h in hosts.values()}
    addresses = {h.check_output("ip -4 -o addr show dev eth0 | awk '{print $4}'") for h in hosts.values()}
    assert names == set(HOSTS)
    assert len(addresses) == 3


def test_systemd_is_pid1_and_running(host):
    assert host.check_output("cat /proc/1/comm") == "systemd"
    assert host.run("systemctl is-system-running").stdout.strip() == "running"


def test_file_and_process_of_node1_are_invisible_elsewhere(host):
    on_node1 = host.backend.get_hostname() == "node1"
    assert host.file("/root/isolation-marker").exists is on_node1
    assert (host.run("pgrep -f '[s]leep infinity'").rc == 0) is on_node1


@pytest.mark.parametrize("name", ["node2", "node3"])
def test_reboot_and_power_cut_bring_the_host_back(name):
    target = all_hosts()[name]
    # /run is tmpfs: its marker must be gone; the disk keeps the init start time taken before.
    assert not target.file("/run/boot-marker").exists
    before = int(target.file("/root/init-started-before").content_string)
    assert int(target.check_output("stat -c %Z /proc/1")) > before
    assert target.run("systemctl is-system-running").stdout.strip() == "running"


def test_haproxy_runs_as_a_systemd_unit_and_answers_the_controller():
    lb = all_hosts()["node2"]
    service = lb.service("haproxy")
    assert service.is_running and service.is_enabled
    address = lb.check_output("ip -4 -o addr show dev eth0 | awk '{print $4}'").split("/")[0]
    with urllib.request.urlopen(f"http://{address}:8080/", timeout=5) as reply:  # survived the reboot
        assert reply.status == 200
        assert reply.read().decode() == "haproxy on node2\n"
