# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later


from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error, SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import ENV_PRELOAD_JS
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd import instance_state, parse_show


# ----------------------------------------------------------------- systemctl show parser

SHOW = """Id=nodefleet-web@0.service
ActiveState=active
SubState=running
MainPID=4242
NRestarts=0
ExecMainStartTimestamp=@1763848000
MemoryCurrent=52428800
LoadState=loaded

Id=nodefleet-web@1.service
ActiveState=activating
SubState=auto-restart
MainPID=0
NRestarts=3
ExecMainStartTimestamp=
MemoryCurrent=[not set]
LoadState=loaded
"""


def test_parse_show_and_map_states():
    units = parse_show(SHOW)
    assert sorted(units) == ['nodefleet-web@0.service', 'nodefleet-web@1.service']
    first = instance_state(0, units['nodefleet-web@0.service'], True, '/srv/web/releases/v1')
    assert first == {'pm_id': 0, 'pid': 4242, 'status': 'online', 'restart_time': 0, 'pm_uptime': 1763848000000,
                     'memory': 52428800, 'cpu': 0, 'out_log': None, 'err_log': None, 'enabled': True, 'release': '/srv/web/releases/v1'}
    second = instance_state(1, units['nodefleet-web@1.service'], False)
    assert (second['status'], second['restart_time'], second['pid'], second['memory']) == ('waiting restart', 3, 0, 0)


@pytest.mark.parametrize('active, sub, status', [
    ('failed', 'failed', 'errored'),
    ('inactive', 'dead', 'stopped'),
    ('activating', 'start', 'launching'),
    ('deactivating', 'stop-sigterm', 'stopping'),
])
def test_state_mapping(active, sub, status):
    assert instance_state(0, {'ActiveState': active, 'SubState': sub}, False)['status'] == status


# ----------------------------------------------------------------- one env file grammar for both supervisors

ENV_FILE = (
    'A="x$HOME \\$y `z` \\\\ \\q \\" end"\n'
    'B= unq  \\\\ab  \n'
    "C='s $q \\\\ '\n"
    'export D=1\n'
    '; comment\n'
    '# comment\n'
    'E="multi\nline"\n'
    'F=plain\n'
    'G = "sp" x \n'
    'H="a\\nb"\n'
)
# What systemd 252 (Debian 12) makes of ENV_FILE, measured with systemd-run -p EnvironmentFile= on a fleet host.
SYSTEMD_SAYS = {'A': 'x$HOME $y `z` \\ \\q " end', 'B': 'unq  \\ab', 'C': 's $q \\\\ ', 'E': 'multi\nline', 'F': 'plain',
                'G': 'spx', 'H': 'a\\nb'}


@pytest.mark.skipif(shutil.which('node') is None, reason='needs node')
def test_env_preload_reads_env_files_as_systemd_does(tmp_path):
    (tmp_path / 'app.env').write_text(ENV_FILE)
    (tmp_path / 'preload.cjs').write_text(ENV_PRELOAD_JS)
    code = 'console.log(JSON.stringify(Object.fromEntries(%s.map(k => [k, process.env[k]]).filter(e => e[1] !== undefined))))' % (
        json.dumps(sorted('ABCDEFGH')),)
    out = subprocess.run(['node', '--require', str(tmp_path / 'preload.cjs'), '-e', code], check=True, capture_output=True,
                         text=True, env={'NODEFLEET_ENV_FILE': str(tmp_path / 'app.env'), 'PATH': '/usr/bin:/bin'}).stdout
    assert json.loads(out) == SYSTEMD_SAYS


# ----------------------------------------------------------------- runner

def test_journal_entries_tell_systemd_from_the_app():
    from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd import journal_entry
    assert journal_entry('{"MESSAGE": "Started x.", "_PID": "1"}') == (True, 'Started x.')
    assert journal_entry('{"MESSAGE": "hi", "_PID": "77", "SYSLOG_IDENTIFIER": "web"}') == (False, 'hi')
    assert journal_entry('{"MESSAGE": [104, 105, 255], "_PID": "77"}') == (False, 'hi\ufffd')
    assert journal_entry('{"MESSAGE": null}') is None and journal_entry('not json') is None


def test_runner_commands_and_failures(fake_module, monkeypatch):
    from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd import SystemdRunner
    module = fake_module(outputs=[(1, '', 'Unit x.service not found.'), (1, '', ''), (0, '{"MESSAGE": "a", "_PID": "1"}\n', ''),
                                  (1, '', 'no journal')])
    runner = SystemdRunner(module)
    with pytest.raises(Pm2Error) as err:
        runner.run('restart', 'x.service')
    assert 'systemctl restart x.service failed (rc=1): Unit x.service not found.' == str(err.value)
    assert runner.try_run('reset-failed', 'x.service') is False
    assert runner.journal(['x.service'], 5, since=1700000000.5) == [(True, 'a')]
    assert module.calls[-1][-4:] == ['--since', '@1700000000', '-u', 'x.service']
    assert runner.journal(['x.service'], 5) == []
    assert runner.calls == 2 and runner.show([]) == {}
    assert SystemdRunner(fake_module(bins={})).journal(['x.service'], 5) == []


def test_runner_without_systemd_or_root(fake_module, monkeypatch):
    from ansible_collections.nodefleet.pm2.plugins.module_utils import _systemd
    runner = _systemd.SystemdRunner(fake_module(bins={}))
    assert runner.available is False and runner.apps() == {} and runner.loaded_instances(['web']) == {}
    with pytest.raises(SpecError) as err:
        runner.require()
    assert err.value.field == 'supervisor' and 'not running' in str(err.value)
    monkeypatch.setattr(_systemd.SystemdRunner, 'available', property(lambda self: True))
    monkeypatch.setattr(_systemd.os, 'geteuid', lambda: 1000)
    with pytest.raises(SpecError) as err:
        runner.require()
    assert 'become' in str(err.value)


def test_runner_reads_the_host(tmp_path, monkeypatch):
    from ansible_collections.nodefleet.pm2.plugins.module_utils import _systemd, _systemd_unit
    runner = _systemd.SystemdRunner
    monkeypatch.setattr(_systemd, 'UNIT_DIR', str(tmp_path / 'missing'))
    monkeypatch.setattr(_systemd, 'WANTS_DIR', str(tmp_path / 'missing'))
    monkeypatch.setattr(_systemd_unit, 'STATE_DIR', str(tmp_path))
    assert runner.managed_names() == [] and runner.enabled_instances('web') == set()
    (tmp_path / 'web.json').write_text('not json')
    assert runner.read_env_digest('web') is None and runner.read_env_digest('api') is None
    assert runner.process_rss(os.getpid()) > 0 and runner.process_rss(0) == 0
    assert runner.process_release(0) is None and runner.process_release(os.getpid()) == os.path.realpath(os.getcwd())
    assert runner.process_release(2 ** 22 + 1) is None
