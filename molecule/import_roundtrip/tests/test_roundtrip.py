# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The import round trip: per seed file and app, PM2 on "deployed" (the imported inventory applied with pm2_env and
pm2_app) against PM2 on "reference" (`pm2 start <original file> --env production`).

Compared per process: the PM2 fields (FIELDS), the keys of PM2's record, and what the app itself sees - its
environment, argv, execArgv and cwd - recorded by the stand-in at start. Paths are compared relative to the project
root. The only differences allowed are the collection's own (INTENDED) and values that are not configuration
(NOT_CONFIG); a key only the original gives PM2 must be one the import reports as unmapped. Secrets must be in the
app's environment with the original's value and nowhere in PM2's records.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jinja2
import pytest
import testinfra
import yaml

SCENARIO = Path(__file__).resolve().parent.parent
ROUNDTRIP = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "roundtrip"
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
VARS = yaml.safe_load((SCENARIO / "vars" / "seeds.yml").read_text())
SEEDS = {seed["project"]: seed for seed in VARS["roundtrip_seeds"]}
USERS = sorted({seed["user"] for seed in SEEDS.values()})
SIDES = ("deployed", "reference")

# PM2 field (pm2 jlist, pm2_env) -> the ecosystem option it comes from.
FIELDS = {
    "exec_mode": "exec_mode", "pm_exec_path": "script", "args": "args", "pm_cwd": "cwd", "exec_interpreter": "interpreter",
    "node_args": "node_args", "autorestart": "autorestart", "max_memory_restart": "max_memory_restart",
    "min_uptime": "min_uptime", "max_restarts": "max_restarts", "restart_delay": "restart_delay",
    "exp_backoff_restart_delay": "exp_backoff_restart_delay", "kill_timeout": "kill_timeout", "wait_ready": "wait_ready",
    "listen_timeout": "listen_timeout", "cron_restart": "cron_restart", "pm_out_log_path": "out_file",
    "pm_err_log_path": "error_file", "pm_log_path": "log_file", "merge_logs": "merge_logs",
    "log_date_format": "log_date_format", "time": "time", "watch": "watch", "ignore_watch": "ignore_watch",
    "watch_delay": "watch_delay", "namespace": "namespace", "instance_var": "instance_var", "treekill": "treekill",
}

# THE differences nodefleet.pm2 makes on purpose, in one place; each is applied where its key is used below.
INTENDED = {
    # pm2_app's markers in the app's env and PM2's record: spec fingerprint, release, env file path and a keyed
    # digest of its content (no values).
    "NODEFLEET_*": "pm2_app markers",
    # pm2_app loads the env file with `node --require <PM2_HOME>/nodefleet/env-preload.cjs` (node_args, execArgv).
    "node_args": "the env-file preload comes first",
    # pm2_deploy names the release as every app's cwd; PM2 records the option as given (absent, or relative in the
    # file) and exports it as PWD. pm_cwd, the resolved cwd, is compared, and PWD once resolved like it.
    "cwd": "the option as given",
    # env_<name> blocks become inventory groups; the deployed host is in group production, so the env it gets is
    # compared with `--env production`.
    "env_*": "inventory groups",
}
PRELOAD = "/home/{user}/.pm2/nodefleet/env-preload.cjs"
# Values that differ between any two starts, whatever the configuration.
NOT_CONFIG = {
    "created_at", "pm_uptime", "unique_id", "pm_id", "pm_pid_path", "restart_time", "unstable_restarts", "status",
    "axm_monitor", "axm_actions", "axm_options", "axm_dynamic",
    # PM2's state of a process that has been restarted (a watch or cron restart, a crash).
    "exit_code", "prev_restart_delay", "_tree_pids",
    # systemd's identifiers of each PM2 daemon start, inherited by cluster workers from the daemon's environment.
    "INVOCATION_ID", "JOURNAL_STREAM", "SYSTEMD_EXEC_PID",
}


def report(project):
    return json.loads((ROUNDTRIP / "imports.json").read_text())[project]


def collect(name):
    host = testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")
    code = (SCENARIO / "tests" / "collect.py").read_text()
    return json.loads(host.check_output("python3 -c %s %s" + " %s" * len(USERS), code, VARS["roundtrip_env_dir"], *USERS))


@pytest.fixture(scope="module")
def hosts():
    """{side: {user: {jlist, dump, processes, problems}}}, once every process is online and recorded."""
    return {side: collect(side) for side in SIDES}


def start_dir(side, seed):
    """Where the tree is: a release behind current on both hosts, unless the seed names its own `reference`."""
    return seed["reference"] if side == "reference" and seed.get("reference") else f"/srv/{seed['project']}/current"


def roots(side, seed):
    """Project roots, longest first: the release behind current (the kernel's cwd) and current itself."""
    if start_dir(side, seed) != f"/srv/{seed['project']}/current":
        return [start_dir(side, seed)]
    return [f"/srv/{seed['project']}/releases/standin", f"/srv/{seed['project']}/current"]


def normalise(value, side, seed, name):
    """Project root -> $ROOT (point-tron's absolute cwd became the release, as the import notes); app name -> $NAME."""
    if isinstance(value, str):
        for root in roots(side, seed):
            value = value.replace(root, "$ROOT")
        return "$NAME" if value == name else value
    if isinstance(value, list):
        return [normalise(v, side, seed, name) for v in value]
    if isinstance(value, dict):
        return {("$NAME" if k == name else k): normalise(v, side, seed, name) for k, v in value.items()}
    return value


def without_preload(args, user):
    """INTENDED["node_args"]."""
    args = list(args or [])
    return args[2:] if args[:2] == ["--require", PRELOAD.format(user=user)] else args


class App:
    """One imported app on both hosts: its name on each, PM2's processes and the stand-ins' records by instance."""

    def __init__(self, project, hosts, name):
        self.seed = SEEDS[project]
        self.user = self.seed["user"]
        original = {r["to"]: r["from"] for r in report(project)["renamed"]}
        self.names = {"deployed": name, "reference": original.get(name, name)}
        self.jlist, self.records = {}, {}
        for side in SIDES:
            data = hosts[side][self.user]
            procs = [p for p in json.loads(data["jlist"]) if p["name"] == self.names[side]]
            self.jlist[side] = sorted(procs, key=lambda p: int(p["pm2_env"].get("NODE_APP_INSTANCE", 0)))
            self.records[side] = {key.rsplit(":", 1)[1]: proc for key, proc in data["processes"].items()
                                  if key.rsplit(":", 1)[0] == self.names[side]}

    def norm(self, value, side):
        return normalise(value, side, self.seed, self.names[side])

    def fields(self, side, proc):
        env = proc["pm2_env"]
        out = {}
        for field in FIELDS:
            value = env.get(field)
            if field == "node_args" and side == "deployed":
                value = without_preload(value, self.user)
            if field in ("pm_out_log_path", "pm_err_log_path", "pm_log_path") and isinstance(value, str):
                value = value.replace(f"-{proc['pm_id']}.log", "-$PM_ID.log")  # PM2's suffix without merge_logs
            out[field] = self.norm(value, side)
        return out


def apps_of(project, hosts):
    return [App(project, hosts, name) for name in report(project)["apps"]]


PROJECTS = list(SEEDS)


@pytest.mark.parametrize("project", PROJECTS)
def test_the_import_reports_apps_secrets_and_unmapped_keys(project):
    rep = report(project)
    assert rep["apps"]
    for entry in rep["unmapped"]:
        assert entry["reason"] and (entry["app"] is None or entry["app"] in rep["apps"]), entry
    for entry in rep["secrets_moved"]:
        assert entry["app"] in rep["apps"] and entry["var"].startswith("vault_"), entry


@pytest.mark.parametrize("user", USERS)
def test_each_pm2_runs_exactly_the_apps_of_its_seeds(hosts, user):
    for side in SIDES:
        expected = set()
        for project, seed in SEEDS.items():
            if seed["user"] == user:
                rep = report(project)
                original = {r["to"]: r["from"] for r in rep["renamed"]}
                expected |= {original.get(a, a) if side == "reference" else a for a in rep["apps"]}
        assert {p["name"] for p in json.loads(hosts[side][user]["jlist"])} == expected, side


@pytest.mark.parametrize("project", PROJECTS)
def test_every_process_is_online_with_its_record(hosts, project):
    for app in apps_of(project, hosts):
        for side in SIDES:
            assert [p for n, p in hosts[side][app.user]["problems"] if n == app.names[side]] == [], side
            assert len(app.jlist[side]) == len(app.records[side]) >= 1, (side, app.names)


@pytest.mark.parametrize("project", PROJECTS)
def test_same_instance_count(hosts, project):
    for app in apps_of(project, hosts):
        assert len(app.jlist["deployed"]) == len(app.jlist["reference"]), app.names
        assert sorted(app.records["deployed"]) == sorted(app.records["reference"]), app.names


@pytest.mark.parametrize("project", PROJECTS)
def test_pm2_fields_are_equal(hosts, project):
    diffs = []
    for app in apps_of(project, hosts):
        if len(app.jlist["deployed"]) != len(app.jlist["reference"]):
            diffs.append((app.names["deployed"], "instance counts differ"))
        for index, (a, b) in enumerate(zip(app.jlist["deployed"], app.jlist["reference"])):
            fa, fb = app.fields("deployed", a), app.fields("reference", b)
            diffs += [(app.names["deployed"], index, FIELDS[f], fa[f], fb[f]) for f in FIELDS if fa[f] != fb[f]]
    assert not diffs, "\n".join(map(str, diffs))


@pytest.mark.parametrize("project", PROJECTS)
def test_pm2_record_keys_differ_only_as_intended_or_reported(hosts, project):
    """A key only the original gives PM2 must be reported as unmapped; the deployed host adds only INTENDED keys."""
    wrong = []
    for app in apps_of(project, hosts):
        name = app.names["deployed"]
        if not (app.jlist["deployed"] and app.jlist["reference"]):
            wrong.append((name, "not running on both hosts"))
            continue
        a = app.norm(app.jlist["deployed"][0]["pm2_env"], "deployed")
        b = app.norm(app.jlist["reference"][0]["pm2_env"], "reference")
        reported = {u["key"] for u in report(project)["unmapped"] if u["app"] == name}
        for key in sorted(set(b) - set(a) - NOT_CONFIG):
            env_var = key in b.get("env", {})  # the app's environment, compared in the next test
            env_block = key.startswith("env_") and isinstance(b[key], dict)  # INTENDED["env_*"]
            if not (env_var or env_block or key in reported):
                wrong.append((name, "only the original has it and the import does not report it", key))
        for key in sorted(set(a) - set(b) - NOT_CONFIG):
            if not (key.startswith("NODEFLEET_") or key == "cwd"):  # INTENDED["NODEFLEET_*"], INTENDED["cwd"]
                wrong.append((name, "only on the deployed host", key))
        # Reported keys are not applied (PM2 keeps some, like env_file, and drops others, like log_file_max_size).
        wrong += [(name, "reported but applied", key) for key in sorted(reported & set(a))]
    assert not wrong, "\n".join(map(str, wrong))


@pytest.mark.parametrize("project", PROJECTS)
def test_the_app_sees_the_same_environment_args_and_cwd(hosts, project):
    """process.env of every instance, secrets included, without PM2's record fields (fork mode exposes them as
    variables; the tests above compare them), NOT_CONFIG and the NODEFLEET_* markers."""
    diffs = []
    for app in apps_of(project, hosts):
        name = app.names["deployed"]
        if not (app.jlist["deployed"] and app.jlist["reference"]):
            diffs.append((name, "not running on both hosts"))
            continue
        pm2_keys = set()
        for side in SIDES:
            env = app.norm(app.jlist[side][0]["pm2_env"], side)
            pm2_keys |= set(env) - set(env.get("env", {}))
        for instance, a in app.records["deployed"].items():
            if instance not in app.records["reference"]:
                diffs.append((name, instance, "no such instance on the reference host"))
                continue
            ra = app.norm(a["record"], "deployed")
            rb = app.norm(app.records["reference"][instance]["record"], "reference")
            ra["execArgv"] = without_preload(ra["execArgv"], app.user)
            diffs += [(name, instance, item) for item in ("argv", "execArgv", "cwd") if ra[item] != rb[item]]
            skip = pm2_keys | NOT_CONFIG
            ea = {k: v for k, v in ra["env"].items() if k not in skip and not k.startswith("NODEFLEET_")}
            eb = {k: v for k, v in rb["env"].items() if k not in skip}
            if not eb.get("PWD", "/").startswith(("/", "$ROOT")):  # INTENDED["cwd"]: a relative cwd of the file
                pwd = os.path.normpath(os.path.join(start_dir("reference", app.seed), eb["PWD"]))
                eb["PWD"] = app.norm(pwd, "reference")
            # Names only: values may be secrets.
            diffs += [(name, instance, "env", key) for key in sorted(set(ea) | set(eb)) if ea.get(key) != eb.get(key)]
    assert not diffs, "\n".join(map(str, diffs))


def vault_values(project):
    values = {}
    for path in sorted((ROUNDTRIP / project / "inventory" / "group_vars").glob("*/pm2_secrets.yml")):
        argv = ["ansible-vault", "view", "--vault-password-file", str(ROUNDTRIP / "vault-password.txt"), str(path)]
        values[path.parent.name] = yaml.safe_load(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
    return values


def with_secrets():
    if not (ROUNDTRIP / "imports.json").exists():
        return []
    return [project for project in PROJECTS if report(project)["secrets_moved"]]


def test_some_seed_has_secrets():
    assert with_secrets(), "no seed has a secret: the secret checks below did not run"


@pytest.mark.parametrize("project", with_secrets())
def test_secrets_come_from_the_env_file_only(hosts, project):
    vault = vault_values(project)
    deployed, reference = hosts["deployed"][SEEDS[project]["user"]], hosts["reference"][SEEDS[project]["user"]]
    checked = 0
    for app in apps_of(project, hosts):
        for entry in (s for s in report(project)["secrets_moved"] if s["app"] == app.names["deployed"]):
            key, where = entry["key"], (entry["app"], entry["key"])
            values = {p["record"]["env"].get(key) for p in app.records["reference"].values()}
            assert len(values) == 1 and None not in values, where
            value = values.pop()
            # Plain booleans below: pytest would print the values of a failed comparison, and they are secrets.
            # The original puts it into PM2's records: the leak the import removes (and proof the search sees it).
            leaked_by_original = value in reference["jlist"]
            assert leaked_by_original, where
            # In the encrypted file (group production over all) with the original's value...
            in_vault = vault.get("production", {}).get(entry["var"], vault["all"].get(entry["var"])) == value
            assert in_vault, where
            for instance, proc in app.records["deployed"].items():
                # ...and in the app's environment, loaded inside the process by the preload: not even in the
                # environment PM2 started the process with (/proc/<pid>/environ).
                seen_by_app = proc["record"]["env"].get(key) == value
                assert seen_by_app, (where, instance)
                exec_env = "\0".join(proc["environ"].values()) if proc["environ"] is not None else None
                assert exec_env is not None, (where, instance)
                in_exec_env = value in exec_env
                assert not in_exec_env, (where, instance)
            in_jlist = value in deployed["jlist"]
            assert not in_jlist, where
            assert deployed["dump"] and app.names["deployed"] in deployed["dump"], where  # the dump was really read
            in_dump = value in deployed["dump"]
            assert not in_dump, where
            checked += 1
    assert checked == len(report(project)["secrets_moved"])


# What the import writes for nodefleet.pm2.pm2_runtime and nodefleet.pm2.pm2_logrotate (issue 11): the deployed
# host's users come from the imported pm2_runtime_users, and pm2_logrotate with the imported pm2_logrotate_apps
# rotates the imported apps' logs. Last in this file: rotating writes into directories some apps watch.

def deployed():
    return testinfra.get_host(f"ansible://deployed?ansible_inventory={INVENTORY}")


def test_the_imported_inventories_made_pm2_runtime_create_the_users():
    before = json.loads((ROUNDTRIP / "users-before.json").read_text())
    assert before == [], f"the deployed host had {before} before the imports were applied"
    host = deployed()
    for user in USERS:
        account = host.user(user)
        assert account.exists and account.home == f"/home/{user}" and account.shell == "/usr/sbin/nologin", user
        assert account.uid < 1000, (user, account.uid)  # a system user, as pm2_runtime creates them
        pm2_home = host.file(f"/home/{user}/.pm2")
        assert pm2_home.is_directory and pm2_home.user == user and pm2_home.mode == 0o700, user
        unit = host.service(f"pm2-{user}")
        assert unit.is_running and unit.is_enabled, user


def imported_logrotate(project):
    """The project's pm2_logrotate_apps as the role sees them: Jinja rendered, PM2's default paths filled in."""
    seed = SEEDS[project]
    data = yaml.safe_load((ROUNDTRIP / project / "inventory" / "group_vars" / "all" / "pm2_apps.yml").read_text())
    variables = {"pm2_deploy_user": seed["user"], "pm2_deploy_to": f"/srv/{project}"}
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    entries = {}
    for entry in data["pm2_logrotate_apps"]:
        rendered = {key: [env.from_string(v).render(**variables) for v in value] if isinstance(value, list)
                    else env.from_string(value).render(**variables) if isinstance(value, str) else value
                    for key, value in entry.items()}
        logs = f"/home/{seed['user']}/.pm2/logs/{entry['name']}"
        rendered.setdefault("paths", [f"{logs}-out.log", f"{logs}-out-[0-9]*.log", f"{logs}-error.log", f"{logs}-error-[0-9]*.log"])
        entries[entry["name"]] = rendered
    return entries


ROTATED = [project for project, seed in SEEDS.items() if seed.get("logrotate", True)]


@pytest.mark.parametrize("project", ROTATED)
def test_pm2_logrotate_rotates_the_imported_apps_logs(project):
    entries = imported_logrotate(project)
    assert sorted(entries) == sorted(report(project)["logrotate_apps"]) and entries
    host = deployed()
    user = SEEDS[project]["user"]
    for name, entry in entries.items():
        config = host.file(f"/etc/logrotate.d/{name}")
        assert config.exists, name
        lines = [line.strip() for line in config.content_string.splitlines() if line.strip() and not line.startswith("#")]
        assert lines[0] == " ".join(entry["paths"]) + " {", (name, lines[0])
        assert f"su {user} {user}" in lines, name
        assert (f"size {entry['size']}" if "size" in entry else "daily") in lines, name
        assert f"rotate {entry.get('rotate', 14)}" in lines, name
    marker = f"roundtrip-logrotate-{os.getpid()}-{project}"
    code = (SCENARIO / "tests" / "rotate.py").read_text()
    configs = [f"/etc/logrotate.d/{name}" for name in sorted(entries)]
    results = json.loads(host.check_output("python3 -c %s %s" + " %s" * len(configs), code, marker, *configs))
    for config, result in results.items():
        assert result["rc"] == 0, (config, result["stderr"])
        assert result["files"], (config, "no log file matches", result["patterns"])
        for path, seen in result["files"].items():
            assert seen == {"rotated_has_marker": True, "live_has_marker": False}, (config, path, seen)


def test_the_point_tron_rotation_settings_come_from_its_ecosystem_file():
    """log_file_max_size: '100MB' and log_file_max_files: 10 (not PM2 options) became the app's logrotate settings."""
    lines = deployed().file("/etc/logrotate.d/point-tron").content_string.splitlines()
    assert "    size 100M" in lines and "    rotate 10" in lines
    assert lines[2] == "/var/log/point-tron/out.log /var/log/point-tron/error.log {", lines[:3]
