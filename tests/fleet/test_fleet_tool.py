# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet tool on this machine: bad input is refused without touching anything, down leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).with_name("fleet.py")
NAME = "pytool"
SUBNET = "192.168.232.0/24"


def fleet(*args, name=NAME):
    return subprocess.run([sys.executable, str(TOOL), "--name", name, *args], capture_output=True, text=True, timeout=300, check=False)


def ssh(host, command):
    argv = fleet("ssh", host).stdout.split()
    return subprocess.run(argv + [command], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def two_hosts():
    fleet("down", "--missing-ok")
    up = fleet("up", "--host-names", "alpha,beta", "--subnet", SUBNET, "--node", "none")
    assert up.returncode == 0, up.stderr
    yield
    fleet("down", "--missing-ok")


def status():
    return json.loads(fleet("status", "--json").stdout)


@pytest.mark.parametrize("args, message", [
    (["up", "--hosts", "0"], "host count must be between 1 and"),
    (["up", "--hosts", "25"], "host count must be between 1 and"),
    (["up", "--host-names", "ok,Bad_Name"], "invalid host names"),
    (["up", "--host-names", "same,same"], "must be unique"),
    (["up", "--subnet", "192.168.232.128/25"], "overlaps"),
    (["up", "--subnet", "8.8.8.0/24"], "private IPv4"),
    (["up", "--subnet", "not-a-net"], "not a valid network"),
    (["up", "--host-names", "a1", "--group", "web=zz"], "not in the fleet"),
])
def test_bad_input_is_refused_and_changes_nothing(two_hosts, args, message):
    before = status()
    other = fleet(*args, name="pybad")
    assert other.returncode == 2
    assert message in other.stderr
    assert fleet("leftovers", name="pybad").stdout.strip() == "none"
    assert status() == before


def test_fleet_name_too_long_for_interface_names():
    result = fleet("up", "--hosts", "1", name="elevenchars")
    assert result.returncode == 2
    assert "must match" in result.stderr


def test_up_while_up_is_refused(two_hosts):
    again = fleet("up", "--host-names", "alpha,beta", "--subnet", "192.168.233.0/24")
    assert again.returncode == 2
    assert "already up" in again.stderr
    assert all(h["running"] for h in status()["hosts"].values())


def test_auto_subnet_picks_one_no_interface_uses(two_hosts):
    up = fleet("up", "--host-names", "gamma", "--subnet", "auto", "--node", "none", name="pyauto")
    try:
        assert up.returncode == 0, up.stderr
        subnet = json.loads(fleet("status", "--json", name="pyauto").stdout)["subnet"]
        assert subnet.startswith("192.168.") and subnet != SUBNET
    finally:
        fleet("down", "--missing-ok", name="pyauto")
    assert fleet("leftovers", name="pyauto").stdout.strip() == "none"


def test_down_with_nothing_up_says_so():
    result = fleet("down", name="pynothing")
    assert result.returncode == 2
    assert "no fleet named 'pynothing' is up" in result.stderr
    assert fleet("down", "--missing-ok", name="pynothing").returncode == 0


def test_hosts_are_separate_machines(two_hosts):
    assert ssh("alpha", "hostname").stdout.strip() == "alpha"
    assert ssh("beta", "hostname").stdout.strip() == "beta"
    assert ssh("alpha", "touch /root/only-alpha").returncode == 0
    assert ssh("beta", "test -e /root/only-alpha").returncode == 1
    assert ssh("beta", "ping -c1 -W2 alpha").returncode == 0


def test_power_cut_and_start(two_hosts):
    assert fleet("power-cut", "beta").returncode == 0
    assert status()["hosts"]["beta"]["running"] is False
    assert ssh("alpha", "hostname").returncode == 0  # the other host is untouched
    assert fleet("start", "beta").returncode == 0
    assert ssh("beta", "systemctl is-system-running").stdout.strip() == "running"


def test_down_leaves_nothing_behind(two_hosts):
    assert fleet("leftovers").returncode == 1  # something to find while up: the check can fail
    assert fleet("down").returncode == 0
    left = fleet("leftovers")
    assert left.stdout.strip() == "none", left.stdout
    assert left.returncode == 0
