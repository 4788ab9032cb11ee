# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a guide of docs/ as written, as a new user on a fresh controller would, against a fresh local fleet.

    python tests/guides/run.py docs/quickstart.md[=ANSIBLE_CORE_VERSION] ...      (make guides-test)

Every fenced block of a guide is accounted for by the HTML comment on the line before it (invisible on a
rendered page), so no command of a guide goes untested by accident:

- a ``sh`` block with no comment is run, its lines in one shell session per guide (``set -euo pipefail``): a
  command that fails fails the guide;
- ``<!-- guide: file PATH -->`` before a block: the block is the content of PATH (relative to the directory the
  session is in), written as the user would save it;
- ``<!-- guide: skip REASON -->`` before a block: not run (an alternative, or output to compare);
- ``<!-- guide: run COMMAND -->`` on its own: a hidden command for what the text asks the user to do by hand
  (edit the code);
- ``<!-- guide: include FILE#ANCHOR -->`` on its own: the blocks of that section of another guide, run here.

The user: a fresh home directory (``HOME``) with only the machine's registry configuration (pip, npm, git), the
project of the guides in ``~/src/myapp`` (tests/guides/myapp: the CRM backend's ecosystem file), a checkout of this
repository in ``~/src/nodefleet-pm2``, and an SSH key that logs in to the servers as ``deploy`` (passwordless sudo).
The session starts in ``~``, outside the repository; the environment has no trace of the repository's venv.

The servers: one fleet per guide (tests/fleet/fleet.py), its hosts named as the guide's ``inventory/hosts.yml``
names them. The guide's addresses stay literally true: ``~/.ssh/config`` (the fleet-provided SSH config, seen by
ssh through a private mount namespace) sends each ``ansible_host`` of the guide to its fleet host.

What only a network this machine lacks would give: Galaxy. The collections of this repository's
``build/collections`` other than nodefleet.pm2 (community.general) are already installed in a collections path
(as ``pip install ansible`` or a distribution package would have done), so that installing the tarball finds the
dependencies galaxy.yml declares. ``=VERSION`` pins ansible-core through ``PIP_CONSTRAINT`` within the range the
guide's ``pip install`` asks for.

After each guide, the apps are asked on every host (GET / on the app's port): the right app and environment, and
the e-signature key delivered from vault. The wall time of each guide, as its user sees it, and of each block is
printed. The fleet is removed at the end (GUIDE_KEEP=1 keeps it and the work directory).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
FLEET_TOOL = REPO / "tests" / "fleet" / "fleet.py"
PROJECT = Path(__file__).resolve().parent / "myapp"
DIRECTIVE = re.compile(r"^<!-- guide: (file|skip|run|include) ?(.*?) ?-->$")
FENCE = re.compile(r"^```(\w*)\s*$")
HEADING = re.compile(r"^(#+) (.*)$")
# Per guide: the servers' Node.js (none: pm2_runtime installs Debian's; bind: already there, as on servers that
# run PM2 today) and what the servers run before the guide starts.
GUIDES = {
    "quickstart.md": {"fleet": "gqs", "node": "none", "before": None},
    "migration.md": {"fleet": "gmig", "node": "bind", "before": "pm2-started-app"},
}
# Machine-wide registry configuration a user of this machine has in their home.
USER_CONFIG = [".npmrc", ".config/pip", ".gitconfig"]


class GuideError(Exception):
    """A guide that cannot be run as written."""


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def parse(path: Path, anchor: str | None = None) -> list[dict]:
    """The steps of a guide (or of one section of it): {kind: sh|file|run|include, text, line, path}."""
    lines = path.read_text().splitlines()
    steps: list[dict] = []
    directive: tuple[str, str] | None = None
    section_level = None
    inside = anchor is None
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = HEADING.match(line)
        if heading and anchor is not None:
            level = len(heading.group(1))
            if slug(heading.group(2)) == anchor:
                inside, section_level = True, level
            elif inside and section_level is not None and level <= section_level:
                break
        found = DIRECTIVE.match(line.strip())
        fence = FENCE.match(line)
        if found:
            kind, arg = found.groups()
            if kind == "run" and inside:
                steps.append({"kind": "run", "text": arg + "\n", "line": i + 1, "source": path})
            elif kind == "include" and inside:
                other, _sep, other_anchor = arg.partition("#")
                steps += parse(path.parent / other, other_anchor or None)
            elif kind in ("file", "skip"):
                directive = (kind, arg)
            i += 1
            continue
        if fence:
            lang, start = fence.group(1), i
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise GuideError(f"{path}:{start + 1}: code block without its closing fence")
            text = "\n".join(body) + "\n"
            if inside:
                if directive and directive[0] == "file":
                    steps.append({"kind": "file", "text": text, "line": start + 1, "source": path, "path": directive[1]})
                elif directive and directive[0] == "skip":
                    pass
                elif lang == "sh":
                    steps.append({"kind": "sh", "text": text, "line": start + 1, "source": path})
                else:
                    raise GuideError(f"{path}:{start + 1}: a ```{lang} block needs <!-- guide: file PATH --> or "
                                     "<!-- guide: skip REASON --> on the line before it")
            directive = None
        elif line.strip():
            directive = None
        i += 1
    if anchor is not None and not steps:
        raise GuideError(f"{path}: no section #{anchor} with steps")
    return steps


def script(steps: list[dict]) -> str:
    """One shell session: the steps in order, each announced with its place in the guide and timed."""
    out = [
        "set -euo pipefail",
        'trap \'echo "guide: FAILED at $__at: $BASH_COMMAND" >&2\' ERR',
        "__block() { __at=$1; __t0=$SECONDS; echo; echo \"### $1\"; }",
        "__done() { echo \"### $__at took $((SECONDS - __t0)) s\"; }",
    ]
    for step in steps:
        where = f"{step['source'].relative_to(REPO)}:{step['line']}"
        out.append(f"__block {shlex.quote(where)}")
        if step["kind"] == "file":
            out.append(f"echo '+ write {step['path']}'")
            out.append(f"mkdir -p \"$(dirname {step['path']})\"")
            out.append(f"cat > {step['path']} <<'__GUIDE_FILE__'\n{step['text']}__GUIDE_FILE__")
        else:
            if step["kind"] == "run":
                out.append("echo '+ (by hand) " + step["text"].strip().replace("'", "'\\''") + "'")
            else:
                out.append("set -x")
            out.append(step["text"].rstrip())
            out.append("{ set +x; } 2>/dev/null")
        out.append("__done")
    return "\n".join(out) + "\n"


def fleet(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(FLEET_TOOL), "--name", name, *args], capture_output=True, text=True,
                            check=False, timeout=900)
    if check and result.returncode != 0:
        raise GuideError(f"fleet {name} {' '.join(args)}: {result.stderr.strip()}")
    return result


def host_ssh(name: str, host: str, command: str, stdin: bytes | None = None) -> str:
    argv = fleet(name, "ssh", host).stdout.split()
    result = subprocess.run(argv + [command], input=stdin, capture_output=True, check=False, timeout=600)
    if result.returncode != 0:
        raise GuideError(f"{host}: {command}: rc {result.returncode}: {result.stderr.decode(errors='replace')[-2000:]}")
    return result.stdout.decode()


def guide_hosts(steps: list[dict]) -> dict[str, str]:
    """Host name -> ansible_host of the inventory the guide writes (its hosts.yml)."""
    found: dict[str, str] = {}

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "hosts" and isinstance(value, dict):
                    for host, hostvars in value.items():
                        found[host] = (hostvars or {}).get("ansible_host", host)
                else:
                    walk(value)

    for step in steps:
        if step["kind"] == "file" and step["path"].endswith("hosts.yml"):
            walk(yaml.safe_load(step["text"]))
    if not found:
        raise GuideError("the guide writes no inventory hosts.yml with hosts: nothing to run it against")
    return found


def prepare_servers(name: str, hosts: list[str], key: Path, before: str | None) -> None:
    """What the guide takes for granted on the servers: a sudo user `deploy` the user's key logs in as."""
    pub = key.with_name(key.name + ".pub").read_text()
    for host in hosts:
        host_ssh(name, host, "useradd --create-home --shell /bin/bash deploy && install -d -m 0700 -o deploy -g deploy ~deploy/.ssh"
                             f" && echo {shlex.quote(pub.strip())} > ~deploy/.ssh/authorized_keys"
                             " && chown deploy: ~deploy/.ssh/authorized_keys && chmod 0600 ~deploy/.ssh/authorized_keys"
                             " && echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy && chmod 0440 /etc/sudoers.d/deploy")
        if before == "pm2-started-app":
            # How the team runs it today: a checkout built on the server, started by root's PM2 from the
            # ecosystem file (`pm2 start ecosystem.config.js --env production`), saved for boot.
            tar = subprocess.run(["tar", "-C", str(PROJECT), "-cf", "-", "."], capture_output=True, check=True).stdout
            host_ssh(name, host, "mkdir -p /var/www/myapp && tar -C /var/www/myapp -xf -", stdin=tar)
            host_ssh(name, host, "npm install --global --no-audit --no-fund pm2@7.0.4 >/dev/null && cd /var/www/myapp"
                                 " && node build.js && mkdir -p logs && pm2 start ecosystem.config.js --env production"
                                 " >/dev/null && pm2 save >/dev/null")
            old = host_ssh(name, host, "curl -fsS http://127.0.0.1:3000/")
            if json.loads(old)["cwd"] != "/var/www/myapp":
                raise GuideError(f"{host}: the old setup does not answer as expected: {old}")


def make_home(work: Path, key: Path, addresses: dict[str, str], fleet_ips: dict[str, str]) -> Path:
    home = work / "home"
    real_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    for rel in USER_CONFIG:
        src = real_home / rel
        if src.is_dir():
            shutil.copytree(src, home / rel)
        elif src.is_file():
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, home / rel)
    (home / "src").mkdir(parents=True)
    shutil.copytree(PROJECT, home / "src" / "myapp")
    checkout = home / "src" / "nodefleet-pm2"
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=False)
    if listing.returncode == 0:  # the checkout as git sees it: no venv, no build output
        checkout.mkdir()
        subprocess.run(f"tar --null --ignore-failed-read -T - -cf - | tar -xf - -C {shlex.quote(str(checkout))}",
                       shell=True, cwd=REPO, input=listing.stdout, check=True)
    else:  # an exported tree
        shutil.copytree(REPO, checkout, symlinks=True, ignore=shutil.ignore_patterns(".venv", "build", ".git"))
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    shutil.copy(key, ssh / "id_ed25519")
    shutil.copy(key.with_name(key.name + ".pub"), ssh / "id_ed25519.pub")
    (ssh / "id_ed25519").chmod(0o600)
    entries = "".join(f"Host {address}\n  HostName {fleet_ips[host]}\n" for host, address in addresses.items())
    (ssh / "config").write_text(
        "# The servers of the guide are hosts of a local fleet (tests/guides/run.py).\n" + entries +
        f"Host *\n  IdentityFile {ssh / 'id_ed25519'}\n  UserKnownHostsFile {ssh / 'known_hosts'}\n"
        "  StrictHostKeyChecking accept-new\n")
    return home


def clean_environment(home: Path, core: str | None, work: Path) -> dict[str, str]:
    """A login shell's environment on a fresh controller: nothing of this repository's venv or Makefile."""
    venv_bins = {str(REPO / ".venv" / "bin"), os.path.dirname(sys.executable)}
    path = ":".join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(":") if p and p not in venv_bins)
    env = {"HOME": str(home), "PATH": path, "LANG": os.environ.get("LANG", "C.UTF-8"), "USER": "root", "TERM": "dumb",
           "ANSIBLE_NOCOLOR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for keep in ("PYENV_ROOT", "TMPDIR", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if keep in os.environ:
            env[keep] = os.environ[keep]
    real_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    if "PYENV_ROOT" not in env and (real_home / ".pyenv").is_dir():
        env["PYENV_ROOT"] = str(real_home / ".pyenv")  # the machine's python3 is a pyenv shim
    # Galaxy stand-in: the other collections of build/collections already installed in a path after Ansible's defaults.
    standin = work / "preinstalled" / "ansible_collections"
    standin.mkdir(parents=True)
    for namespace in (REPO / "build" / "collections" / "ansible_collections").iterdir():
        if namespace.name != "nodefleet":
            (standin / namespace.name).symlink_to(namespace)
    env["ANSIBLE_COLLECTIONS_PATH"] = f"{home}/.ansible/collections:/usr/share/ansible/collections:{standin.parent}"
    if core:
        constraint = work / "constraints.txt"
        constraint.write_text(f"ansible-core=={core}\n")
        env["PIP_CONSTRAINT"] = str(constraint)
    return env


def check_apps(name: str, hosts: list[str]) -> None:
    """The guide's result on every host: backend-prod and backend-dev (env block as in `pm2 start --env production`:
    the dev app has no env_production) answer from a release, with the key from vault."""
    for host in hosts:
        for port, app, node_env in ((3000, "backend-prod", "production"), (3001, "backend-dev", "development")):
            body = json.loads(host_ssh(name, host, f"curl -fsS http://127.0.0.1:{port}/"))
            want = {"app": app, "node_env": node_env, "esign_key": "present"}
            got = {k: body.get(k) for k in want}
            if got != want or not body.get("cwd", "").startswith("/srv/myapp/releases/"):
                raise GuideError(f"{host}:{port} answers {body}, expected {want} from a release under /srv/myapp")


def run_guide(guide: Path, core: str | None) -> float:
    config = GUIDES[guide.name]
    steps = parse(guide)
    addresses = guide_hosts(steps)
    hosts = list(addresses)
    name = os.environ.get("NODEFLEET_FLEET_PREFIX", "") + config["fleet"]
    work = Path(tempfile.mkdtemp(prefix=f"nodefleet-guide-{guide.stem}-"))
    keep = os.environ.get("GUIDE_KEEP") == "1"
    print(f"=== guide {guide.relative_to(REPO)}: {len(steps)} steps, hosts {', '.join(hosts)}, fleet {name}, "
          f"work dir {work}" + (f", ansible-core {core}" if core else ""), flush=True)
    fleet(name, "down", "--missing-ok")
    try:
        fleet(name, "up", "--host-names", ",".join(hosts), "--subnet", "auto", "--node", config["node"])
        state = json.loads(fleet(name, "status", "--json").stdout)
        key = Path(f"/run/nodefleet/{name}/id_ed25519")
        prepare_servers(name, hosts, key, config["before"])
        home = make_home(work, key, addresses, {h: state["hosts"][h]["ip"] for h in hosts})
        env = clean_environment(home, core, work)
        (work / "guide.sh").write_text(script(steps))
        ssh_dir = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        # ssh reads the config of the passwd entry's home, not $HOME: a private mount namespace shows it the user's.
        wrapper = f"mount --bind {shlex.quote(str(home / '.ssh'))} {shlex.quote(str(ssh_dir))} && exec bash {shlex.quote(str(work / 'guide.sh'))}"
        t0 = time.monotonic()
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", wrapper],
                                cwd=home, env=env, check=False, timeout=3600)
        wall = time.monotonic() - t0
        if result.returncode != 0:
            raise GuideError(f"{guide.relative_to(REPO)} failed after {wall:.0f} s (rc {result.returncode}); see above")
        check_apps(name, hosts)
        print(f"=== guide {guide.relative_to(REPO)}: PASSED; as its user sees it: {wall:.0f} s", flush=True)
        return wall
    finally:
        if not keep:
            fleet(name, "down", "--missing-ok", check=False)
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    times = {}
    try:
        for arg in argv:
            path, _sep, core = arg.partition("=")
            guide = (Path.cwd() / path).resolve()
            if guide.name not in GUIDES:
                raise GuideError(f"{path}: not a guide this harness knows ({', '.join(GUIDES)})")
            times[path] = run_guide(guide, core or None)
    except GuideError as exc:
        print(f"guides-test: {exc}", file=sys.stderr)
        return 1
    print("guides-test: PASSED; wall time as a user sees it: " + ", ".join(f"{p} {t:.0f} s" for p, t in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
