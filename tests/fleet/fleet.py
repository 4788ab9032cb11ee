# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A local fleet of throwaway Debian hosts with systemd as PID 1, reached over SSH.

Each host is a systemd-nspawn container booted on an overlay over a cached Debian bookworm base, with its own
hostname, network namespace (veth on a private bridge), process table and filesystem. A tinyproxy on the bridge
gives the hosts egress to the package registries. Needs Linux and root. See docs/fleet.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SUITE = "bookworm"
BASE_PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-apt", "sudo", "iproute2",
    "procps", "iputils-ping", "ca-certificates", "curl", "less",
]
# Units that only make noise or take locks at random moments inside a throwaway host.
MASKED_UNITS = [
    "apt-daily.timer", "apt-daily-upgrade.timer", "console-getty.service", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "man-db.timer", "systemd-timesyncd.service",
]
HOST_DEPS = {  # command -> Debian package that provides it
    "debootstrap": "debootstrap", "systemd-nspawn": "systemd-container", "tinyproxy": "tinyproxy",
    "zstd": "zstd", "ip": "iproute2", "ssh-keygen": "openssh-client", "ssh": "openssh-client",
}
MAX_HOSTS = 24
PROXY_PORT = 8888
HOSTNAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# veth names are nf<name>v<index> and interface names stop at 15 characters: 10 for the name at most.
FLEET_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
CACHE_DIR = Path(os.environ.get("NODEFLEET_CACHE", Path.home() / ".cache" / "nodefleet"))
RUN_DIR = Path(os.environ.get("NODEFLEET_RUN", "/run/nodefleet"))
CGROUP_ROOTS = [Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified")]


class FleetError(Exception):
    """A refusal or failure the user should read; nothing was left half-done."""


def log(msg: str) -> None:
    print(f"fleet: {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], check: bool = True, capture: bool = True, **kw) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, check=False, text=True, capture_output=capture, **kw)
    except subprocess.TimeoutExpired as exc:
        raise FleetError(f"{' '.join(argv)} did not finish within {exc.timeout:.0f}s (is the machine overloaded?)") from None
    if check and proc.returncode != 0:
        raise FleetError(f"{' '.join(argv)} failed (rc {proc.returncode}): {(proc.stderr or '').strip()[-2000:]}")
    return proc


# ---------------------------------------------------------------------------------------------------------------
# Machine preparation and base image
# ---------------------------------------------------------------------------------------------------------------

def ensure_host_tools() -> None:
    missing = sorted({pkg for cmd, pkg in HOST_DEPS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    log(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    # The package starts a system-wide tinyproxy where an init system runs; the fleet runs its own.
    run(["pkill", "-x", "-f", "/usr/bin/tinyproxy"], check=False)


def debian_mirror() -> str:
    for src in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        if src.exists():
            m = re.search(r"(?:URIs:|deb)\s+(https?://\S+/debian)\b", src.read_text())
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


CUSTOMISE_SCRIPT = r"""
set -eu
R="$1"
rm -f "$R"/etc/ssh/ssh_host_*
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"
echo 'nameserver 127.0.0.1' > "$R/etc/resolv.conf"
mkdir -p "$R/root/.ssh" && chmod 700 "$R/root/.ssh"
printf 'UseDNS no\nPermitRootLogin prohibit-password\nMaxStartups 100:30:200\nMaxSessions 100\n' > "$R/etc/ssh/sshd_config.d/nodefleet.conf"
for u in $MASKED_UNITS; do ln -sf /dev/null "$R/etc/systemd/system/$u"; done
mkdir -p "$R/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\n' > "$R/etc/systemd/journald.conf.d/nodefleet.conf"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
"""


def base_recipe() -> dict:
    return {
        "suite": SUITE, "packages": BASE_PACKAGES, "masked": MASKED_UNITS, "script": CUSTOMISE_SCRIPT, "v": 3,
    }


def base_id() -> str:
    return hashlib.sha256(json.dumps(base_recipe(), sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def exclusive(directory: Path):
    """An exclusive lock on DIRECTORY/.lock for the duration of the block (released when the process dies)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ensure_base(force: bool = False) -> Path:
    """Return the extracted base rootfs, building and caching it if its recipe changed."""
    bid = base_id()
    tarball = CACHE_DIR / f"base-{bid}.tar.zst"
    rootfs = CACHE_DIR / f"base-{bid}"
    ready = CACHE_DIR / f"base-{bid}.ready"
    with exclusive(CACHE_DIR):  # one build of the base at a time
        if force:
            ready.unlink(missing_ok=True)
            tarball.unlink(missing_ok=True)
        if ready.exists():
            return rootfs
        ensure_host_tools()
        if rootfs.exists():
            shutil.rmtree(rootfs)
        if not tarball.exists():
            t0 = time.monotonic()
            build = CACHE_DIR / f"build-{bid}"
            if build.exists():
                shutil.rmtree(build)
            mirror = debian_mirror()
            log(f"building base image {bid} from {mirror} (about a minute, once)")
            run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(build), mirror])
            run(["bash", "-c", CUSTOMISE_SCRIPT, "customise", str(build)], env=dict(os.environ, MASKED_UNITS=" ".join(MASKED_UNITS)))
            partial = tarball.with_suffix(".partial")
            run(["tar", "--numeric-owner", "--xattrs", "-I", "zstd -T0 -3", "-C", str(build), "-cf", str(partial), "."])
            partial.rename(tarball)
            shutil.rmtree(build)
            for old in CACHE_DIR.glob("base-*"):  # only the current recipe is worth keeping
                if not old.name.startswith(f"base-{bid}"):
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
            log(f"base image built in {time.monotonic() - t0:.1f}s")
        rootfs.mkdir()
        run(["tar", "--numeric-owner", "--xattrs", "-I", "zstd", "-C", str(rootfs), "-xf", str(tarball)])
        ready.touch()
    return rootfs


# ---------------------------------------------------------------------------------------------------------------
# Kernel limits
# ---------------------------------------------------------------------------------------------------------------

# The hosts share the machine's kernel and, without user namespaces, root's per-user limits: every host's systemd,
# journald, logind, sshd sessions and services each hold inotify instances and watches charged to root. Measured:
# an idle host holds 6 instances and 22 watches; apps, SSH sessions and user managers add more, hence the margin.
INOTIFY_PER_HOST = {"max_user_instances": 12, "max_user_watches": 400}
# Raised to at least this when too low, so that the next fleets fit too.
INOTIFY_RAISE_TO = {"max_user_instances": 1024, "max_user_watches": 524288}
INOTIFY_SYSCTL = Path("/proc/sys/fs/inotify")
BOOT_SECONDS_PER_HOST = 5


def boot_timeout(host_count: int) -> float:
    """Seconds up waits for the hosts to boot: NODEFLEET_BOOT_TIMEOUT, else 60 s plus 5 s per host."""
    value = os.environ.get("NODEFLEET_BOOT_TIMEOUT", "")
    if value:
        try:
            return float(value)
        except ValueError:
            raise FleetError(f"NODEFLEET_BOOT_TIMEOUT={value!r} is not a number of seconds") from None
    return 60.0 + BOOT_SECONDS_PER_HOST * host_count


def inotify_usage(uid: int = 0) -> dict[str, int]:
    """Inotify instances and watches held by UID's processes (the kernel counts them per user)."""
    used = {"max_user_instances": 0, "max_user_watches": 0}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if proc.stat().st_uid != uid:
                continue
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == "anon_inode:inotify":
                        used["max_user_instances"] += 1
                        info = (proc / "fdinfo" / fd.name).read_text()
                        used["max_user_watches"] += sum(1 for line in info.splitlines() if line.startswith("inotify wd:"))
    return used


def ensure_kernel_limits(host_count: int) -> None:
    """Raise the inotify limits the hosts would exhaust, or say exactly which one stops them."""
    used = inotify_usage()
    for key, per_host in INOTIFY_PER_HOST.items():
        path = INOTIFY_SYSCTL / key
        limit = int(path.read_text())
        need = used[key] + per_host * host_count
        if need <= limit:
            continue
        target = max(need, INOTIFY_RAISE_TO[key])
        try:
            path.write_text(f"{target}\n")
        except OSError as exc:
            raise FleetError(
                f"fs.inotify.{key} is {limit}: root already uses {used[key]} and {host_count} hosts need about "
                f"{per_host * host_count} more, and it cannot be raised here ({exc.strerror}); on the machine, as root: "
                f"sysctl -w fs.inotify.{key}={target}") from None
        log(f"raised fs.inotify.{key} from {limit} to {target} (root uses {used[key]}, {host_count} hosts need about "
            f"{per_host * host_count} more)")


# ---------------------------------------------------------------------------------------------------------------
# Fleet state
# ---------------------------------------------------------------------------------------------------------------

class Fleet:
    def __init__(self, name: str):
        if not FLEET_NAME_RE.match(name):
            raise FleetError(f"fleet name {name!r} must match {FLEET_NAME_RE.pattern} (it prefixes interfaces)")
        self.name = name
        self.dir = RUN_DIR / name
        self.state_file = self.dir / "state.json"
        self.bridge = f"nf{name}br"[:15]

    # -- state ------------------------------------------------------------------------------------------------
    def load(self) -> dict:
        if not self.state_file.exists():
            raise FleetError(f"no fleet named {self.name!r} is up (nothing to do)")
        return json.loads(self.state_file.read_text())

    def save(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def netns(self, host: str) -> str:
        return f"nf{self.name}-{host}"

    def veth(self, index: int) -> str:
        return f"nf{self.name}v{index}"[:15]

    def cgroup_dirs(self, host: str | None = None) -> list[Path]:
        rel = f"nodefleet-{self.name}" + (f"/{host}" if host else "")
        return [root / rel for root in CGROUP_ROOTS if root.is_dir()]

    @property
    def key_file(self) -> Path:
        return self.dir / "id_ed25519"

    # -- up ---------------------------------------------------------------------------------------------------
    def up(self, hosts: list[str], subnet: str, node: str, groups: dict[str, list[str]]) -> dict:
        if os.geteuid() != 0:
            raise FleetError("the local fleet needs root (namespaces, mounts, bridges)")
        if self.state_file.exists() or self.dir.exists():
            raise FleetError(f"a fleet named {self.name!r} is already up (run 'down' first, or pick another --name)")
        validate_hosts(hosts)
        boot_timeout(len(hosts))  # a bad NODEFLEET_BOOT_TIMEOUT is refused before anything is created
        for group, members in groups.items():
            unknown = sorted(set(members) - set(hosts))
            if unknown:
                raise FleetError(f"group {group!r} names hosts that are not in the fleet: {', '.join(unknown)}")
        net = free_subnet() if subnet == "auto" else validate_subnet(subnet, len(hosts))
        if Path(f"/sys/class/net/{self.bridge}").exists():
            raise FleetError(f"interface {self.bridge} already exists; another fleet or a leftover uses this name")
        taken = set(run(["ip", "netns", "list"]).stdout.split())
        clash = [h for h in hosts if self.netns(h) in taken]
        if clash:
            raise FleetError(f"network namespaces already exist for {', '.join(clash)}")
        if node == "bind" and not (shutil.which("node") and Path("/usr/lib/node_modules/npm").is_dir()):
            raise FleetError("--node bind needs the controller's node and /usr/lib/node_modules/npm; use --node none")
        ensure_host_tools()
        ensure_kernel_limits(len(hosts))
        base = ensure_base()

        addrs = list(net.hosts())
        bridge_ip = str(addrs[0])
        state = {
            "name": self.name, "subnet": str(net), "bridge": self.bridge, "bridge_ip": bridge_ip, "node": node,
            "base": str(base), "groups": groups, "proxy_pid": None,
            "hosts": {h: {"index": i, "ip": str(addrs[10 + i]), "launcher_pid": None} for i, h in enumerate(hosts)},
        }
        t0 = time.monotonic()
        self.dir.mkdir(parents=True)
        try:
            self.save(state)
            # Host upper layers on tmpfs: teardown is instant and nothing lands on the work disk.
            (self.dir / "hosts").mkdir()
            run(["mount", "-t", "tmpfs", "-o", "mode=0755", f"nodefleet-{self.name}", str(self.dir / "hosts")])
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"nodefleet-{self.name}", "-f", str(self.key_file)])
            run(["ip", "link", "add", self.bridge, "type", "bridge"])
            run(["ip", "addr", "add", f"{bridge_ip}/{net.prefixlen}", "dev", self.bridge])
            run(["ip", "link", "set", self.bridge, "up"])
            state["proxy_pid"] = self._start_proxy(state)
            self.save(state)
            for host in hosts:
                self._prepare_host(state, host)
                self.save(state)
            for host in hosts:
                state["hosts"][host]["launcher_pid"] = self._boot(state, host)
                self.save(state)
            self._wait_ssh(state, hosts)
        except BaseException:
            log("up failed; removing what was created")
            with contextlib.suppress(Exception):
                self.down(quiet=True)
            raise
        state["up_seconds"] = round(time.monotonic() - t0, 2)
        self.save(state)
        return state

    def reuse_or_replace(self, hosts: list[str], subnet: str, node: str, groups: dict[str, list[str]]) -> dict:
        """up --reuse: keep a fleet of this name that is up as asked (same hosts, node and groups, every host
        answering), else take whatever is there down and bring the fleet up anew."""
        if self.state_file.exists():
            state = self.load()
            why = None
            if list(state["hosts"]) != hosts:
                why = f"it has hosts {', '.join(state['hosts'])}"
            elif state.get("node") != node or (state.get("groups") or {}) != groups:
                why = "its --node or --group differ"
            elif subnet not in ("auto", state["subnet"]):
                why = f"its subnet is {state['subnet']}"
            else:
                try:
                    self._wait_ssh(state, hosts, timeout=30)
                except FleetError as exc:
                    why = str(exc).split("\n", maxsplit=1)[0]
            if why is None:
                log(f"reusing fleet {self.name!r}, which is already up as asked")
                state["reused"] = True
                return state
            log(f"replacing fleet {self.name!r}: {why}")
            self.down()
        elif self.dir.exists():
            log(f"removing what is left of fleet {self.name!r}")
            self.down_leftovers()
        return self.up(hosts, subnet, node, groups)

    def down_leftovers(self) -> None:
        """Remove a fleet directory without state (a crash between mkdir and the first save)."""
        unmount(self.dir / "hosts")
        shutil.rmtree(self.dir, ignore_errors=True)

    def _start_proxy(self, state: dict) -> int:
        conf = self.dir / "tinyproxy.conf"
        conf.write_text(
            f"User nobody\nGroup nogroup\nPort {PROXY_PORT}\nListen {state['bridge_ip']}\nTimeout 600\n"
            f"MaxClients 100\nAllow {state['subnet']}\nLogLevel Warning\nLogFile \"{self.dir}/tinyproxy.log\"\n"
            "ConnectPort 443\nConnectPort 80\nDisableViaHeader Yes\n")
        (self.dir / "tinyproxy.log").touch()
        os.chown(self.dir / "tinyproxy.log", 65534, 65534)
        proc = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=open(self.dir / "tinyproxy.out", "w"), start_new_session=True)
        return proc.pid

    def _prepare_host(self, state: dict, host: str) -> None:
        info = state["hosts"][host]
        hdir = self.dir / "hosts" / host
        upper, work, root = hdir / "upper", hdir / "work", hdir / "root"
        for d in (upper, work, root):
            d.mkdir(parents=True)
        run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={state['base']},upperdir={upper},workdir={work}", str(root)])
        etc = root / "etc"
        (etc / "hostname").write_text(host + "\n")
        peers = "".join(f"{h['ip']}\t{name}\n" for name, h in state["hosts"].items())
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{host}\n::1\tlocalhost ip6-localhost\n"
                                   f"{state['bridge_ip']}\tcontroller\n{peers}")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host}", "-f", str(etc / "ssh/ssh_host_ed25519_key")])
        auth = root / "root/.ssh/authorized_keys"
        auth.write_text(Path(str(self.key_file) + ".pub").read_text())
        auth.chmod(0o600)
        proxy = f"http://{state['bridge_ip']}:{PROXY_PORT}"
        no_proxy = f"localhost,127.0.0.1,{state['subnet']},{','.join(state['hosts'])}"
        (etc / "environment").write_text(
            f'http_proxy="{proxy}"\nhttps_proxy="{proxy}"\nHTTP_PROXY="{proxy}"\nHTTPS_PROXY="{proxy}"\n'
            f'no_proxy="{no_proxy}"\nNO_PROXY="{no_proxy}"\nNODE_EXTRA_CA_CERTS="/etc/ssl/certs/ca-certificates.crt"\n')
        (etc / "apt/apt.conf.d/80nodefleet-proxy").write_text(
            f'Acquire::http::Proxy "{proxy}";\nAcquire::https::Proxy "{proxy}";\n')
        # sudo resets the environment: a user that logs in and becomes root (ansible_become) keeps the proxy.
        sudoers = etc / "sudoers.d/nodefleet-proxy"
        sudoers.write_text('Defaults env_keep += "http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY '
                           'NODE_EXTRA_CA_CERTS"\n')
        sudoers.chmod(0o440)
        # The controller may reach registries through a TLS-inspecting CA; hosts must trust what it trusts, and
        # keep trusting it after update-ca-certificates regenerates the bundle.
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.exists():
            shutil.copy(bundle, etc / "ssl/certs/ca-certificates.crt")
            (root / "usr/local/share/ca-certificates").mkdir(parents=True, exist_ok=True)
            shutil.copy(bundle, root / "usr/local/share/ca-certificates/nodefleet-controller.crt")
        if state["node"] == "bind":
            (root / "usr/lib/node_modules/npm").mkdir(parents=True, exist_ok=True)
            (root / "usr/bin/node").touch()
            for tool, target in (("npm", "npm-cli.js"), ("npx", "npx-cli.js")):
                link = root / "usr/bin" / tool
                link.unlink(missing_ok=True)
                link.symlink_to(f"../lib/node_modules/npm/bin/{target}")
        ns, veth = self.netns(host), self.veth(info["index"])
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", veth, "master", self.bridge, "up"])
        prefix = ipaddress.ip_network(state["subnet"]).prefixlen
        run(["ip", "-n", ns, "addr", "add", f"{info['ip']}/{prefix}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "route", "add", "default", "via", state["bridge_ip"]])

    def _boot(self, state: dict, host: str) -> int:
        """Start the host's power loop; returns its PID. Exit code 133 is a reboot asked inside the guest."""
        hdir = self.dir / "hosts" / host
        nspawn = ["systemd-nspawn", "--boot", "--quiet", "-D", str(hdir / "root"), f"--machine=nf{self.name}-{host}",
                  "--register=no", "--keep-unit", f"--network-namespace-path=/run/netns/{self.netns(host)}",
                  "--console=passive", "--link-journal=no", "--resolv-conf=off", "--timezone=off"]
        if state["node"] == "bind":
            nspawn += ["--bind-ro=/usr/bin/node:/usr/bin/node", "--bind-ro=/usr/lib/node_modules/npm:/usr/lib/node_modules/npm"]
        cgroup_procs = " ".join(str(d / "cgroup.procs") for d in self.cgroup_dirs(host))
        for d in self.cgroup_dirs(host):
            d.mkdir(parents=True, exist_ok=True)
        script = hdir / "power.sh"
        # Own cgroup first, else --keep-unit puts every host's services in one shared cgroup.
        script.write_text(
            "#!/bin/bash\n"
            f"for f in {cgroup_procs}; do echo $$ > \"$f\"; done\n"
            "while true; do\n"
            f"  {' '.join(nspawn)}\n"
            "  rc=$?\n  echo \"$(date +%s) nspawn exited rc=$rc\"\n"
            "  [ \"$rc\" = 133 ] || exit \"$rc\"\n"
            "done\n")
        script.chmod(0o755)
        proc = subprocess.Popen([str(script)], stdin=subprocess.DEVNULL, stdout=open(hdir / "console.log", "a"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        return proc.pid

    def _wait_ssh(self, state: dict, hosts: list[str], timeout: float | None = None) -> None:
        """Wait until systemd has finished booting on every host and SSH answers, or fail saying what each host did."""
        if timeout is None:
            timeout = boot_timeout(len(hosts))
        deadline = time.monotonic() + timeout
        pending = set(hosts)
        last: dict[str, str] = {}
        while pending:
            for host in sorted(pending):
                if not alive(state["hosts"][host]["launcher_pid"]):
                    raise FleetError(f"host {host} stopped while booting; its console said:\n{self._console_tail(host)}")
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    probe = subprocess.run(
                        self.ssh_argv(state, host) + ["systemctl is-system-running --wait >/dev/null 2>&1; systemctl is-system-running"],
                        check=False, text=True, capture_output=True, timeout=min(30, max(left, 1)))
                except subprocess.TimeoutExpired:
                    last[host] = "the SSH probe did not answer in time"
                    continue
                answer = probe.stdout.strip()
                if answer in ("running", "degraded"):
                    pending.discard(host)
                else:
                    last[host] = f"systemd is {answer!r}" if answer else f"ssh: {(probe.stderr or '').strip()[-200:] or f'rc {probe.returncode}'}"
            if pending and time.monotonic() >= deadline:
                detail = "; ".join(f"{h}: {last.get(h, 'not probed yet')}" for h in sorted(pending))
                raise FleetError(
                    f"{len(pending)} of {len(hosts)} hosts did not come up over SSH within {timeout:.0f}s ({detail}). "
                    f"A loaded machine boots slower: set NODEFLEET_BOOT_TIMEOUT (seconds) to wait longer")
            if pending:
                time.sleep(0.3)

    def _console_tail(self, host: str, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = (self.dir / "hosts" / host / "console.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:]) or "(nothing)"
        return "(no console log)"

    def ssh_argv(self, state: dict, host: str) -> list[str]:
        return ["ssh", "-q", "-i", str(self.key_file), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "ConnectTimeout=2", "-o", "BatchMode=yes", f"root@{state['hosts'][host]['ip']}"]

    # -- power ------------------------------------------------------------------------------------------------
    def _nspawn_pid(self, launcher: int | None) -> int | None:
        return next(iter(children(launcher)), None) if launcher else None

    def power_cut(self, host: str) -> None:
        state = self.load()
        info = self._host(state, host)
        launcher = info["launcher_pid"]
        if not alive(launcher):
            raise FleetError(f"host {host} is already off")
        nspawn = self._nspawn_pid(launcher)
        guest_init = next(iter(children(nspawn)), None) if nspawn else None
        # Killing the guest's init takes the whole PID namespace with it; nspawn then exits and the loop ends.
        for pid in (guest_init, nspawn):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        wait_gone(launcher, 10)
        if alive(launcher):
            os.kill(launcher, signal.SIGKILL)
        self._cleanup_nspawn_runtime(host)
        info["launcher_pid"] = None
        self.save(state)

    def start(self, host: str) -> None:
        state = self.load()
        info = self._host(state, host)
        if alive(info["launcher_pid"]):
            raise FleetError(f"host {host} is already running")
        info["launcher_pid"] = self._boot(state, host)
        self.save(state)
        self._wait_ssh(state, [host])

    def _host(self, state: dict, host: str) -> dict:
        if host not in state["hosts"]:
            raise FleetError(f"fleet {self.name!r} has no host {host!r} (hosts: {', '.join(state['hosts'])})")
        return state["hosts"][host]

    def _cleanup_nspawn_runtime(self, host: str) -> None:
        shutil.rmtree(f"/run/systemd/nspawn/propagate/nf{self.name}-{host}", ignore_errors=True)
        Path(f"/run/systemd/nspawn/unix-export/nf{self.name}-{host}").unlink(missing_ok=True)

    # -- down -------------------------------------------------------------------------------------------------
    def down(self, quiet: bool = False) -> None:
        state = self.load()
        hosts = state.get("hosts", {})
        # Clean halt first (SIGTERM to nspawn), all hosts in parallel, then force what is left.
        for info in hosts.values():
            nspawn = self._nspawn_pid(info.get("launcher_pid"))
            if nspawn:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(nspawn, signal.SIGTERM)
        for info in hosts.values():
            wait_gone(info.get("launcher_pid"), 15)
        for host, info in hosts.items():
            launcher = info.get("launcher_pid")
            if alive(launcher):
                nspawn = self._nspawn_pid(launcher)
                for pid in (*(children(nspawn) if nspawn else []), nspawn, launcher):
                    if pid:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                wait_gone(launcher, 5)
            self._kill_cgroup_members(host)
            self._cleanup_nspawn_runtime(host)
            root = self.dir / "hosts" / host / "root"
            unmount(root)
            ns = self.netns(host)
            run(["ip", "netns", "delete", ns], check=False)
            run(["ip", "link", "delete", self.veth(info["index"])], check=False)
        if state.get("proxy_pid") and alive(state["proxy_pid"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state["proxy_pid"], signal.SIGKILL)  # tinyproxy takes ~10 s on SIGTERM
        run(["ip", "link", "delete", self.bridge], check=False)
        self._remove_cgroups()
        unmount(self.dir / "hosts")
        shutil.rmtree(self.dir, ignore_errors=True)
        if not quiet:
            log(f"fleet {self.name!r} is down")

    def _kill_cgroup_members(self, host: str) -> None:
        for d in self.cgroup_dirs(host):
            for procs in d.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    for pid in procs.read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)

    def _remove_cgroups(self) -> None:
        for top in self.cgroup_dirs():
            if not top.exists():
                continue
            # Deepest first: a cgroup directory can only be removed once it has no children.
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                for _attempt in range(50):
                    try:
                        d.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)
            with contextlib.suppress(OSError):
                top.rmdir()

    # -- reporting --------------------------------------------------------------------------------------------
    def status(self) -> dict:
        state = self.load()
        report = {"name": self.name, "subnet": state["subnet"], "proxy": f"http://{state['bridge_ip']}:{PROXY_PORT}", "hosts": {}}
        for host, info in state["hosts"].items():
            report["hosts"][host] = {"ip": info["ip"], "running": alive(info["launcher_pid"])}
        return report

    def inventory(self, extra_groups: dict[str, list[str]]) -> str:
        state = self.load()
        groups = dict(state.get("groups") or {})
        groups.update(extra_groups)
        for group, members in groups.items():
            unknown = sorted(set(members) - set(state["hosts"]))
            if unknown:
                raise FleetError(f"group {group!r} names hosts that are not in the fleet: {', '.join(unknown)}")
        ssh_args = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ControlMaster=auto -o ControlPersist=120s"
        lines = [
            "# Written by tests/fleet/fleet.py inventory; regenerated on every call.",
            "all:",
            "  vars:",
            "    ansible_user: root",
            f"    ansible_ssh_private_key_file: {self.key_file}",
            f"    ansible_ssh_common_args: '{ssh_args}'",
            "    ansible_python_interpreter: /usr/bin/python3",
            f"    nodefleet_fleet_name: {self.name}",
            f"    nodefleet_fleet_node: {state['node']}",
            "  hosts:",
        ]
        for host, info in state["hosts"].items():
            lines += [f"    {host}:", f"      ansible_host: {info['ip']}"]
        if groups:
            lines.append("  children:")
            for group, members in groups.items():
                lines += [f"    {group}:", "      hosts:"] + [f"        {m}: {{}}" for m in members]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------

def validate_hosts(hosts: list[str]) -> None:
    if not 1 <= len(hosts) <= MAX_HOSTS:
        raise FleetError(f"host count must be between 1 and {MAX_HOSTS}, got {len(hosts)}")
    bad = [h for h in hosts if not HOSTNAME_RE.match(h)]
    if bad:
        raise FleetError(f"invalid host names {bad}: each must match {HOSTNAME_RE.pattern}")
    if len(set(hosts)) != len(hosts):
        raise FleetError("host names must be unique")


def validate_subnet(subnet: str, count: int) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise FleetError(f"subnet {subnet!r} is not a valid network: {exc}") from None
    if net.version != 4 or not net.is_private:
        raise FleetError(f"subnet {subnet} must be a private IPv4 network")
    if net.num_addresses < count + 12:
        raise FleetError(f"subnet {subnet} is too small for {count} hosts")
    addrs = json.loads(run(["ip", "-j", "addr", "show"]).stdout or "[]")
    for link in addrs:
        for a in link.get("addr_info", []):
            if a.get("family") != "inet":
                continue
            other = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
            if other.overlaps(net):
                raise FleetError(f"subnet {subnet} overlaps {other} on interface {link['ifname']}; choose another --subnet")
    return net


def unmount(path: Path) -> None:
    if os.path.ismount(path):
        if run(["umount", str(path)], check=False).returncode and os.path.ismount(path):
            run(["umount", "-l", str(path)], check=False)


AUTO_SUBNETS = [f"192.168.{third}.0/24" for third in range(150, 240)]


def free_subnet() -> ipaddress.IPv4Network:
    """The first /24 of AUTO_SUBNETS that no interface uses (up holds the RUN_DIR lock, so two fleets never race)."""
    for candidate in AUTO_SUBNETS:
        try:
            return validate_subnet(candidate, 1)
        except FleetError:
            continue
    raise FleetError(f"no free subnet left in {AUTO_SUBNETS[0]} .. {AUTO_SUBNETS[-1]}; pass --subnet")


def children(pid: int | None) -> list[int]:
    if not pid:
        return []
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int | None) -> bool:
    """True for a live process; a zombie (reaped late by the machine's init) counts as gone."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def parse_groups(values: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for value in values or []:
        name, sep, members = value.partition("=")
        if not sep or not re.match(r"^[a-z_][a-z0-9_]*$", name):
            raise FleetError(f"--group {value!r} must look like NAME=host1,host2 (NAME: lowercase, digits, _)")
        groups[name] = [m for m in members.split(",") if m]
    return groups


def leftovers(name: str) -> list[str]:
    """Everything of fleet NAME still present on the machine (used by tests after down)."""
    fleet = Fleet(name)
    found = []
    if fleet.dir.exists():
        found.append(f"state dir {fleet.dir}")
    for ns in run(["ip", "netns", "list"]).stdout.split():
        if ns.startswith(f"nf{name}-"):
            found.append(f"netns {ns}")
    own_dir = str(fleet.dir) + "/"  # with the slash: fleet "ab" must not claim what fleet "abc" has
    for link in Path("/sys/class/net").iterdir():
        if link.name == fleet.bridge or re.fullmatch(f"nf{name}v[0-9]+", link.name):
            found.append(f"interface {link.name}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4]
        if (mount_point + "/").startswith(own_dir):
            found.append(f"mount {mount_point}")
    for d in fleet.cgroup_dirs():
        if d.exists():
            found.append(f"cgroup {d}")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if f"--machine=nf{name}-" in cmd or own_dir in cmd:
                if alive(int(proc.name)):
                    found.append(f"process {proc.name}: {cmd[:120]}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=os.environ.get("NODEFLEET_NAME", "demo"),
                        help="fleet name; prefixes bridge, netns, veth and cgroups so fleets coexist (default: demo)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="create and boot the hosts")
    p_up.add_argument("--hosts", type=int, default=3, help="host count when --host-names is not given (default 3)")
    p_up.add_argument("--host-names", help="comma-separated host names (default NAME-h1..NAME-hN)")
    p_up.add_argument("--subnet", default="192.168.213.0/24",
                      help="private IPv4 subnet for the bridge, or 'auto' for the first free /24 in 192.168.150-239")
    p_up.add_argument("--node", choices=["bind", "none"], default="bind",
                      help="bind: the controller's Node.js + npm read-only into each host (fast); none: leave Node to the roles")
    p_up.add_argument("--group", action="append", default=[], help="inventory group NAME=host1,host2 (repeatable)")
    p_up.add_argument("--inventory", help="also write the Ansible inventory to this file")
    p_up.add_argument("--reuse", action="store_true",
                      help="a fleet of this name already up with the same hosts, node and groups is kept; "
                           "one that differs or does not answer is replaced")
    sub.add_parser("down", help="stop every host and remove everything of the fleet").add_argument(
        "--missing-ok", action="store_true", help="exit 0 when no such fleet is up")
    p_status = sub.add_parser("status", help="show hosts and whether they run")
    p_status.add_argument("--json", action="store_true")
    p_inv = sub.add_parser("inventory", help="print (or write) an Ansible inventory for the fleet")
    p_inv.add_argument("--group", action="append", default=[])
    p_inv.add_argument("--output")
    sub.add_parser("power-cut", help="kill a host at once, as a power cut would").add_argument("host")
    sub.add_parser("start", help="boot a host that is off").add_argument("host")
    sub.add_parser("build-base", help="build the cached base image now").add_argument("--force", action="store_true")
    sub.add_parser("leftovers", help="list anything of the fleet still on the machine; exit 1 if any")
    sub.add_parser("ssh", help="print the ssh command for a host").add_argument("host")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "build-base":
            t0 = time.monotonic()
            print(ensure_base(force=args.force))
            log(f"base ready in {time.monotonic() - t0:.1f}s")
            return 0
        fleet = Fleet(args.name)
        if args.cmd == "up":
            groups = parse_groups(args.group)
            names = args.host_names.split(",") if args.host_names else [f"{args.name}-h{i + 1}" for i in range(args.hosts)]
            if not args.host_names and not 1 <= args.hosts <= MAX_HOSTS:
                raise FleetError(f"host count must be between 1 and {MAX_HOSTS}, got {args.hosts}")
            with exclusive(RUN_DIR):  # subnet and interface checks of two fleets must not race
                if args.reuse:
                    state = fleet.reuse_or_replace(names, args.subnet, args.node, groups)
                else:
                    state = fleet.up(names, args.subnet, args.node, groups)
            if not state.get("reused"):
                log(f"fleet {args.name!r} up in {state['up_seconds']}s: " + ", ".join(f"{h}={i['ip']}" for h, i in state["hosts"].items()))
            if args.inventory:
                Path(args.inventory).write_text(fleet.inventory({}))
        elif args.cmd == "down":
            if args.missing_ok and not fleet.state_file.exists():
                log(f"no fleet named {args.name!r} is up (nothing to do)")
                return 0
            with exclusive(RUN_DIR):
                fleet.down()
        elif args.cmd == "status":
            report = fleet.status()
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                for host, h in report["hosts"].items():
                    print(f"{host:20} {h['ip']:16} {'running' if h['running'] else 'off'}")
        elif args.cmd == "inventory":
            text = fleet.inventory(parse_groups(args.group))
            if args.output:
                Path(args.output).write_text(text)
            else:
                print(text, end="")
        elif args.cmd == "power-cut":
            fleet.power_cut(args.host)
        elif args.cmd == "start":
            fleet.start(args.host)
        elif args.cmd == "leftovers":
            found = leftovers(args.name)
            print("\n".join(found) if found else "none")
            return 1 if found else 0
        elif args.cmd == "ssh":
            print(" ".join(fleet.ssh_argv(fleet.load(), args.host)))
    except FleetError as exc:
        log(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
