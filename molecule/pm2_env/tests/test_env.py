# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pm2_env: private env files from vault, applied by reloads (changed and removed vars), and no secret anywhere else."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml
from nodefleet_testinfra import HOSTS, jlist, pm2

SCENARIO = Path(__file__).resolve().parent.parent

testinfra_hosts = HOSTS
PM2_HOME = "/home/crm/.pm2"
ENV_DIR = "/etc/nodefleet/env/crm"
LOGS = [Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / name for name in ("converge-vars.log", "converge-secret.log")]


def vault(name):
    out = subprocess.run(["ansible-vault", "view", "--vault-password-file", str(SCENARIO / "vault-password.txt"),
                          str(SCENARIO / name)], check=True, capture_output=True, text=True).stdout
    return yaml.safe_load(out)


SECRETS = vault("vars/vault.yml")
ROTATED = vault("vars/vault-rotated.yml")


def leak_patterns():
    """Every secret value (the old database password too); for the multi-line key each line of its body."""
    values = [SECRETS["vault_crm_esign_app_id"], SECRETS["vault_crm_db_password"], ROTATED["vault_crm_db_password"]]
    key = SECRETS["vault_crm_esign_private_key"]
    values += [line for line in key.splitlines() if "PRIVATE KEY" not in line and len(line) >= 16]
    return values


def app_env(host, port):
    code = ("import urllib.request as u; o = u.build_opener(u.ProxyHandler({})); "
            f"print(o.open('http://127.0.0.1:{port}/', timeout=5).read().decode())")
    return json.loads(host.check_output("python3 -c %s", code))["env"]


def test_env_files_are_private_to_the_app_user(host):
    directory = host.file(ENV_DIR)
    assert directory.user == "crm" and directory.mode == 0o700
    for app in ("crm-backend", "crm-worker"):
        env_file = host.file(f"{ENV_DIR}/{app}.env")
        assert env_file.user == "crm" and env_file.mode == 0o600
    assert not host.file(f"{ENV_DIR}/preflight-probe.env").exists


def test_reload_applied_changed_and_removed_vars_and_the_secrets(host):
    backend = app_env(host, 3100)
    assert backend["LOG_LEVEL"] == "debug"        # changed
    assert "FEATURE_BETA" not in backend          # removed: gone although only reloaded
    assert backend["NODE_ENV"] == "production"
    assert backend["ESIGN_PRIVATE_KEY"] == SECRETS["vault_crm_esign_private_key"]   # multi-line, intact
    assert backend["ESIGN_APP_ID"] == SECRETS["vault_crm_esign_app_id"]
    assert app_env(host, 3101)["DB_PASSWORD"] == ROTATED["vault_crm_db_password"]


def test_no_secret_in_pm2_records_processes_or_world_readable_files(host):
    patterns = leak_patterns()
    places = {"pm2 jlist": pm2(host, "crm", PM2_HOME, "jlist"), "ps -eo args": host.check_output("ps -eo args")}
    for procs in jlist(host, "crm", PM2_HOME).values():
        for proc in procs:
            places[f"pm2 env {proc['pm_id']}"] = pm2(host, "crm", PM2_HOME, "env", str(proc["pm_id"]))
    for dump in ("dump.pm2", "dump.pm2.bak"):
        places[dump] = host.run("cat %s", f"{PM2_HOME}/{dump}").stdout
    hits = [(place, i) for place, text in places.items() for i, value in enumerate(patterns) if value in text]
    assert hits == []
    assert "crm-backend" in places["dump.pm2"]    # the dump was really read

    # The pattern file is root's, mode 0600, so the scan of world-readable files cannot find it.
    host.run("install -m 0600 /dev/null /root/leak-patterns")
    host.run("printf '%%s\\n'" + " %s" * len(patterns) + " > /root/leak-patterns", *patterns)
    find = ("find / /run /tmp /dev/shm -xdev \\( -path /proc -o -path /sys \\) -prune -o "
            "-type f -perm -o+r -print0")
    scanned = int(host.check_output(find + " | tr -cd '\\0' | wc -c"))
    scan = host.run(find + " | xargs -0 grep -lF -f /root/leak-patterns")
    host.run("rm -f /root/leak-patterns")
    print(f"{host.backend.get_hostname()}: {scanned} world-readable files scanned for {len(patterns)} secret strings")
    assert scanned > 1000
    assert scan.stdout == "" and scan.rc != 0, scan.stdout   # grep lists every file with a hit


def test_no_secret_in_the_ansible_output_at_vvv():
    patterns = leak_patterns()
    for log in LOGS:
        text = log.read_text()
        assert "crm-backend.env" in text and "ESTABLISH SSH CONNECTION" in text   # really the -vvv converge output
        assert [i for i, value in enumerate(patterns) if value in text] == [], log.name
