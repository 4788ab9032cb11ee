# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The systemd driver through the pm2_app lifecycle, against the fake host of conftest.py (units in a temporary
directory, systemctl and journalctl answered by the fake)."""

from __future__ import annotations

import json
import os
import pwd
import stat

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils import _pm2_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error, SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_app import run_pm2_app

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='systemd apps are installed by root')
USER = next(p.pw_name for p in pwd.getpwall() if p.pw_uid not in (0, os.geteuid()) and p.pw_name == 'nobody')


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(_pm2_app, 'POLL_INTERVAL', 0.01)


def sweb(app_dir, **options):
    item = dict(name='sweb', supervisor='systemd', script=str(app_dir / 'server.js'), cwd=str(app_dir), settle_time=0,
                env={'PORT': '3201'})
    item.update(options)
    return item


def run(host, check_mode=False, **params):
    params.setdefault('user', USER)
    module = host.module(check_mode=check_mode, **params)
    return run_pm2_app(module, module.params, check_mode)


def actions(result):
    return {a['name']: a['action'] for a in result['apps']}


def unit_file(host, name='sweb'):
    return os.path.join(host.systemd.unit_dir, 'nodefleet-%s@.service' % name)


def test_install_start_then_nothing_to_do(host, app_dir):
    host.pm2.set_daemon(False)  # a host with systemd apps only: PM2 is never asked
    result = run(host, apps=[sweb(app_dir, instances=2, env_file=str(app_dir / 'app.env'))])
    assert actions(result) == {'sweb': 'install+start'} and result['apps'][0]['status'] == 'online'
    text = open(unit_file(host)).read()
    assert 'User=%s' % USER in text.splitlines() and 'EnvironmentFile=%s' % (app_dir / 'app.env') in text
    assert stat.S_IMODE(os.stat(unit_file(host)).st_mode) == 0o644
    assert ['daemon-reload'] in host.systemd.commands
    assert ['enable', '--now', '--', 'nodefleet-sweb@0.service', 'nodefleet-sweb@1.service'] in host.systemd.commands
    with open(os.path.join(host.systemd.state_dir, 'sweb.json')) as handle:
        assert json.load(handle)['env_digest']
    assert result['pm2_calls'] == 0  # nothing of PM2 is needed
    again = run(host, apps=[sweb(app_dir, instances=2, env_file=str(app_dir / 'app.env'))])
    assert actions(again) == {'sweb': 'none'} and again['systemctl_calls'] <= 2


def test_check_mode_writes_no_unit(host, app_dir):
    result = run(host, check_mode=True, apps=[sweb(app_dir)])
    assert actions(result) == {'sweb': 'install+start'}
    assert not os.path.exists(unit_file(host))
    assert {c[0] for c in host.systemd.commands} <= {'list-units', 'show'}  # reads only


def test_ignored_options_are_reported(host, app_dir):
    module = host.module(user=USER, apps=[sweb(app_dir, wait_ready=True, merge_logs=True)])
    run_pm2_app(module, module.params, False)
    assert module.warnings == ['app sweb: supervisor systemd ignores wait_ready, merge_logs']


def test_unit_change_restart_scale_stop_and_absent(host, app_dir):
    run(host, apps=[sweb(app_dir)])
    result = run(host, apps=[sweb(app_dir, kill_timeout=4000)])
    assert actions(result) == {'sweb': 'install+restart'} and result['apps'][0]['reasons'] == ['kill_timeout']
    assert actions(run(host, apps=[sweb(app_dir, kill_timeout=4000, instances=2)])) == {'sweb': 'scale'}
    assert actions(run(host, apps=[sweb(app_dir, kill_timeout=4000, instances=1)])) == {'sweb': 'scale'}
    assert ['disable', '--now', '--', 'nodefleet-sweb@1.service'] in host.systemd.commands
    assert actions(run(host, name='sweb', state='stopped')) == {'sweb': 'stop'}
    result = run(host, name='sweb', state='started', settle_time=0)
    assert actions(result) == {'sweb': 'start'} and result['apps'][0]['supervisor'] == 'systemd'
    assert actions(run(host, apps=[{'name': 'sweb', 'state': 'absent'}])) == {'sweb': 'delete'}
    assert not os.path.exists(unit_file(host))


def test_switch_to_pm2_and_back_never_runs_both(host, app_dir):
    run(host, apps=[sweb(app_dir)])
    result = run(host, apps=[sweb(app_dir, supervisor='pm2')])
    assert actions(result) == {'sweb': 'switch+start'} and result['apps'][0]['reasons'][0] == 'supervisor'
    assert not os.path.exists(unit_file(host)) and len(host.pm2.named('sweb')) == 1
    result = run(host, apps=[sweb(app_dir)])
    assert actions(result) == {'sweb': 'switch+install+start'}
    assert host.pm2.named('sweb') == [] and os.path.exists(unit_file(host))
    stopped = run(host, apps=[sweb(app_dir, supervisor='pm2', state='stopped')])
    assert actions(stopped) == {'sweb': 'switch+start+stop'}
    assert [p['status'] for p in host.pm2.named('sweb')] == ['stopped']


def test_crash_loop_reports_systemd_lines_and_this_runs_journal(host, app_dir):
    host.systemd.crash.add('nodefleet-sweb')
    host.systemd.journal.append(('nodefleet-sweb@0.service', False, 'Error: crashing on purpose'))
    with pytest.raises(Pm2Error) as err:
        run(host, apps=[sweb(app_dir)])
    failure = err.value.details['failures'][0]
    assert failure['why'] == 'crashed' and failure['supervisor'] == 'systemd'
    assert failure['status'] == 'nodefleet-sweb@0.service waiting restart' and failure['restarts'] >= 1
    assert failure['reason'][0].startswith('nodefleet-sweb@0.service: Scheduled restart job')
    assert 'Error: crashing on purpose' in err.value.details['log_tail']
    assert 'systemd: nodefleet-sweb@0.service: Scheduled restart job' in str(err.value)


def test_root_cannot_run_a_systemd_app(host, app_dir):
    with pytest.raises(SpecError) as err:
        run(host, user='root', apps=[sweb(app_dir)])
    assert err.value.field == 'user' and host.systemd.commands == []


@pytest.mark.parametrize('options, field', [
    (dict(script='no-such-command-here'), 'script'),
    (dict(interpreter='no-such-node'), 'interpreter'),
    (dict(exec_mode='cluster'), 'exec_mode'),
    (dict(cron_restart='0 3 * * *'), 'cron_restart'),
])
def test_bad_systemd_input_changes_nothing(host, app_dir, options, field):
    with pytest.raises(SpecError) as err:
        run(host, apps=[sweb(app_dir, **options)])
    assert err.value.field == field and err.value.app == 'sweb'
    assert host.systemd.commands == [] and host.pm2.commands == []


def test_commands_from_path_and_binaries(host, app_dir, monkeypatch):
    binary = app_dir / 'serve'
    binary.write_text('#!/bin/sh\n')
    binary.chmod(0o755)
    run(host, apps=[sweb(app_dir, script=str(binary))])
    assert 'ExecStart="%s"' % binary in open(unit_file(host)).read().splitlines()
