# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet tool on this machine: bad input is refused without touching anything, down leaves nothing behind."""

from __future__ import annotations

import importlib.util
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


def test_up_reuse_keeps_a_fleet_that_is_up_as_asked_and_replaces_one_that_is_not():
    name = "pyreuse"
    args = ["up", "--reuse", "--host-names", "solo", "--subnet", "auto", "--node", "none"]
    try:
        first = fleet(*args, name=name)
        assert first.returncode == 0, first.stderr
        pid = json.loads(fleet("status", "--json", name=name).stdout)
        again = fleet(*args, name=name)
        assert again.returncode == 0, again.stderr
        assert "reusing fleet 'pyreuse'" in again.stderr
        assert json.loads(fleet("status", "--json", name=name).stdout) == pid
        launcher = json.loads((Path("/run/nodefleet") / name / "state.json").read_text())["hosts"]["solo"]["launcher_pid"]
        assert fleet("power-cut", "solo", name=name).returncode == 0
        replaced = fleet(*args, name=name)
        assert replaced.returncode == 0, replaced.stderr
        assert "replacing fleet 'pyreuse'" in replaced.stderr
        state = json.loads((Path("/run/nodefleet") / name / "state.json").read_text())
        assert state["hosts"]["solo"]["launcher_pid"] != launcher
        assert json.loads(fleet("status", "--json", name=name).stdout)["hosts"]["solo"]["running"] is True
    finally:
        fleet("down", "--missing-ok", name=name)
    assert fleet("leftovers", name=name).stdout.strip() == "none"


def test_a_bad_boot_timeout_is_refused(monkeypatch):
    monkeypatch.setenv("NODEFLEET_BOOT_TIMEOUT", "soon")
    result = fleet("up", "--hosts", "1", "--subnet", "auto", name="pybadto")
    assert result.returncode == 2
    assert "NODEFLEET_BOOT_TIMEOUT='soon' is not a number of seconds" in result.stderr
    assert fleet("leftovers", name="pybadto").stdout.strip() == "none"


# Pure logic of the tool, on stand-ins for the kernel's files and for slow commands.

def load_tool():
    spec = importlib.util.spec_from_file_location("fleet_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_inotify_limit_too_low_is_raised(tmp_path, monkeypatch):
    tool = load_tool()
    (tmp_path / "max_user_instances").write_text("128\n")
    (tmp_path / "max_user_watches").write_text("65536\n")
    monkeypatch.setattr(tool, "INOTIFY_SYSCTL", tmp_path)
    monkeypatch.setattr(tool, "inotify_usage", lambda uid=0: {"max_user_instances": 114, "max_user_watches": 100})
    tool.ensure_kernel_limits(24)
    assert int((tmp_path / "max_user_instances").read_text()) >= 114 + 24 * tool.INOTIFY_PER_HOST["max_user_instances"]
    assert (tmp_path / "max_user_watches").read_text() == "65536\n"  # enough for 24 hosts: left alone


def test_an_inotify_limit_that_cannot_be_raised_is_named(tmp_path, monkeypatch):
    tool = load_tool()
    (tmp_path / "max_user_instances").write_text("100000\n")
    # A read-only sysctl (mode 0444: even root cannot write it) stands in for a limit this machine may not raise.
    (tmp_path / "max_user_watches").symlink_to("/proc/sys/kernel/ngroups_max")
    limit = int(Path("/proc/sys/kernel/ngroups_max").read_text())
    monkeypatch.setattr(tool, "INOTIFY_SYSCTL", tmp_path)
    monkeypatch.setattr(tool, "inotify_usage", lambda uid=0: {"max_user_instances": 0, "max_user_watches": 10})
    hosts = limit // tool.INOTIFY_PER_HOST["max_user_watches"] + 1
    need = hosts * tool.INOTIFY_PER_HOST["max_user_watches"]
    with pytest.raises(tool.FleetError, match=rf"fs\.inotify\.max_user_watches is {limit}: root already uses 10 and "
                                              rf"{hosts} hosts need about {need} more.*sysctl -w fs\.inotify\.max_user_watches="):
        tool.ensure_kernel_limits(hosts)
    assert int(Path("/proc/sys/kernel/ngroups_max").read_text()) == limit


def test_a_command_that_outlives_its_timeout_is_a_clear_error():
    tool = load_tool()
    with pytest.raises(tool.FleetError, match=r"sleep 5 did not finish within 0s"):
        tool.run(["sleep", "5"], timeout=0.2)
