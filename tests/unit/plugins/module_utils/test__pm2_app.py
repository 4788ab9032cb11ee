# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pm2_app lifecycle (run_pm2_app) and the PM2 driver against the fake host of conftest.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils import _pm2_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error, SpecError, exit_with
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import MARKER_ENV_DIGEST, MARKER_RELEASE
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_app import run_pm2_app


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(_pm2_app, 'POLL_INTERVAL', 0.01)


def web(app_dir, **options):
    item = dict(name='web', script=str(app_dir / 'server.js'), cwd=str(app_dir), settle_time=0, env={'PORT': '3000'})
    item.update(options)
    return item


def run(host, check_mode=False, diff=False, **params):
    module = host.module(check_mode=check_mode, diff=diff, **params)
    return run_pm2_app(module, module.params, check_mode)


def failing(host, **params):
    with pytest.raises(Pm2Error) as err:
        run(host, **params)
    return err.value


def actions(result):
    return {a['name']: a['action'] for a in result['apps']}


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# ----------------------------------------------------------------- converging

def test_new_app_starts_from_a_private_ecosystem_file_then_nothing_to_do(host, app_dir):
    result = run(host, apps=[web(app_dir, instances=2, exec_mode='cluster')])
    assert actions(result) == {'web': 'start'} and result['changed'] is True
    assert result['apps'][0]['status'] == 'online'
    start = next(c for c in host.pm2.commands if c[0] == 'start')
    assert start[2:] == ['--only', 'web'] and start[1].startswith(os.path.join(host.pm2_home, 'nodefleet', 'ecosystem-'))
    assert not os.path.exists(start[1])  # removed after use
    assert host.pm2.commands[-1] == ['save', '--force']
    assert mode(os.path.join(host.pm2_home, 'dump.pm2')) == 0o600
    assert len(host.pm2.named('web')) == 2
    assert host.pm2.named('web')[0]['env'][MARKER_RELEASE] == os.path.realpath(str(app_dir))
    again = run(host, apps=[web(app_dir, instances=2, exec_mode='cluster')])
    assert actions(again) == {'web': 'none'} and again['changed'] is False and again['pm2_calls'] == 1


def test_check_mode_plans_and_changes_nothing(host, app_dir):
    result = run(host, check_mode=True, apps=[web(app_dir, env_file=str(app_dir / 'app.env'))])
    assert actions(result) == {'web': 'start'} and result['changed'] is True
    assert host.pm2.commands == [['jlist']]
    assert not os.path.exists(os.path.join(host.pm2_home, 'nodefleet'))


def test_check_mode_never_starts_a_daemon(host, app_dir):
    host.pm2.set_daemon(False)
    result = run(host, check_mode=True, apps=[web(app_dir)])
    assert actions(result) == {'web': 'start'} and result['pm2_calls'] == 0 and host.pm2.commands == []


def test_env_file_preload_digest_and_reload_on_content_change(host, app_dir):
    item = web(app_dir, env_file=str(app_dir / 'app.env'))
    run(host, apps=[item])
    state = os.path.join(host.pm2_home, 'nodefleet')
    assert mode(state) == 0o700 and mode(os.path.join(state, 'digest.key')) == 0o600
    assert mode(os.path.join(state, 'env-preload.cjs')) == 0o644
    digest = host.pm2.named('web')[0]['env'][MARKER_ENV_DIGEST]
    assert digest and 'SECRET' not in json.dumps(host.pm2.procs)
    (app_dir / 'app.env').write_text('SECRET=2\n')
    result = run(host, apps=[item])
    assert actions(result) == {'web': 'reload'} and result['apps'][0]['reasons'] == ['env_file_content']
    assert [c[2:] for c in host.pm2.commands if c[0] == 'reload'] == [['--only', 'web']]

    assert host.pm2.named('web')[0]['env'][MARKER_ENV_DIGEST] != digest


def test_an_instance_on_another_release_reloads_the_app(host, app_dir):
    item = web(app_dir, instances=2, exec_mode='cluster')
    run(host, apps=[item])
    host.pm2.named('web')[1]['env'][MARKER_RELEASE] = '/srv/web/releases/old'  # an interrupted reload
    result = run(host, apps=[item])
    assert actions(result) == {'web': 'reload'} and result['apps'][0]['reasons'] == ['release']
    assert {p['env'][MARKER_RELEASE] for p in host.pm2.named('web')} == {os.path.realpath(str(app_dir))}


def test_scale_and_recreate(host, app_dir):
    run(host, apps=[web(app_dir)])
    assert actions(run(host, apps=[web(app_dir, instances=3)])) == {'web': 'scale'}
    assert ['scale', 'web', '3'] in host.pm2.commands and len(host.pm2.named('web')) == 3
    result = run(host, apps=[web(app_dir, instances=3, args=['--x'])])
    assert actions(result) == {'web': 'recreate'} and 'args' in result['apps'][0]['reasons']


def test_commands_act_on_pm2_ids(host, app_dir):
    run(host, apps=[web(app_dir, instances=2, exec_mode='cluster')])
    ids = [str(p['pm_id']) for p in host.pm2.named('web')]
    assert actions(run(host, name='web', state='stopped')) == {'web': 'stop'}
    assert host.pm2.commands[-2] == ['stop'] + ids
    assert actions(run(host, name='web', state='started', settle_time=0)) == {'web': 'start'}
    assert ['restart'] + ids in host.pm2.commands  # never `pm2 start NAME`
    assert actions(run(host, name='web', state='absent')) == {'web': 'delete'}
    assert host.pm2.commands[-2] == ['delete'] + ids


def test_a_numeric_app_name_in_the_daemon_makes_ids_ambiguous(host, app_dir):
    run(host, apps=[web(app_dir)])
    host.pm2.add(str(host.pm2.named('web')[0]['pm_id']), script='/srv/other.js')  # created outside pm2_app
    run(host, name='web', state='stopped')
    assert host.pm2.commands[-2] == ['stop', 'web']


def test_by_name_reload_restart_and_present(host, app_dir):
    host.pm2.add('legacy', instances=2, mode='cluster')
    assert actions(run(host, name='legacy', state='reloaded', settle_time=0)) == {'legacy': 'reload'}
    assert ['reload', 'legacy'] in host.pm2.commands
    assert actions(run(host, name='legacy', state='restarted', settle_time=0)) == {'legacy': 'restart'}
    assert actions(run(host, name='legacy', state='present')) == {'legacy': 'none'}


def test_present_app_that_is_stopped_gets_its_change_and_stays_stopped(host, app_dir):
    run(host, apps=[web(app_dir)])
    run(host, name='web', state='stopped')
    result = run(host, apps=[web(app_dir, state='present', env={'PORT': '1'})])
    assert actions(result) == {'web': 'recreate+stop'} and result['apps'][0]['status'] == 'stopped'
    assert [p['status'] for p in host.pm2.named('web')] == ['stopped']


def test_diff_names_env_keys_never_values(host, app_dir):
    run(host, apps=[web(app_dir)])
    result = run(host, diff=True, apps=[web(app_dir, env={'PORT': '3000', 'TOKEN': 'hunter2'}), {'name': 'gone', 'state': 'absent'}])
    assert result['diff']['before']['web']['env_keys'] == ['PORT']
    assert result['diff']['after']['web']['env_keys'] == ['PORT', 'TOKEN']
    assert result['diff']['before']['web']['changed_fields'] == ['env.TOKEN']
    assert result['diff']['before']['gone'] is None and result['diff']['after']['gone'] is None
    assert 'hunter2' not in json.dumps(result)


def test_single_app_form_returns_action_and_reasons(host, app_dir):
    result = run(host, **web(app_dir))
    assert result['action'] == 'start' and result['reasons'] == ['missing']


# ----------------------------------------------------------------- refusals: nothing runs

@pytest.mark.parametrize('name', ['evil.json', 'job.config.js', 'web.yml', 'x.yaml.bak', 'run.js', 'a.mjs', 'b.cjs', '42', 'all', '-rf'])
def test_names_pm2_reads_as_files_or_patterns_are_refused(host, name):
    err = failing(host, name=name, state='absent')
    assert isinstance(err, SpecError) and err.field == 'name'
    assert host.pm2.commands == []


def test_bad_item_names_the_app_not_its_index_and_nothing_runs(host, app_dir):
    err = failing(host, apps=[web(app_dir), web(app_dir, name='bad', instances=0)])
    assert str(err).startswith('app bad: instances:') and err.details['field'] == 'instances' and err.details['app'] == 'bad'
    assert err.details['changed'] is False and err.details['pm2_calls'] == 0
    assert host.pm2.commands == []
    err = failing(host, apps=[web(app_dir), {'script': '/x.js'}])
    assert str(err).startswith('app number 2 of apps: name: is required')


def test_too_many_instances_are_refused(host, app_dir):
    err = failing(host, apps=[web(app_dir, instances=1000000)])
    assert err.field == 'instances' and 'limit' in str(err)


@pytest.mark.parametrize('params, field', [
    (dict(apps=[{'name': 'web'}, {'name': 'web'}]), 'name'),
    (dict(apps=[{'name': 'web'}], instances=2), 'instances'),
    (dict(name='web', apps=[{'name': 'web'}]), 'options'),
])
def test_list_refusals(host, params, field):
    assert failing(host, **params).field == field


def test_missing_app_by_name_names_the_daemon_it_searched(host):
    err = failing(host, name='worker', state='restarted')
    assert err.field == 'script'
    assert 'the PM2 daemon of user ' in str(err) and 'PM2_HOME %s' % host.pm2_home in str(err)


def test_a_name_that_is_also_a_namespace_is_refused(host, app_dir):
    host.pm2.add('other', namespace='web')
    assert failing(host, apps=[web(app_dir)]).field == 'name'


def test_conflicting_processes_are_refused(host, app_dir):
    host.pm2.add('web', script='/a.js')
    host.pm2.add('web', script='/b.js')
    err = failing(host, apps=[web(app_dir)])
    assert 'several processes share this name' in str(err)


# ----------------------------------------------------------------- crash reports

def write(path, text):
    with open(path, 'a') as handle:
        handle.write(text)


def test_crash_loop_fails_with_status_restarts_pm2_reason_and_both_logs(host, app_dir):
    host.pm2.crash['web'] = 1
    host.pm2.log_lines = ['App [web:0] exited with code [1] via signal [SIGINT]', 'App [web:0] starting in -fork mode-',
                          'App [web:0] exited with code [1] via signal [SIGINT]', 'App [other:7] exited with code [1]']
    write(os.path.join(host.pm2_home, 'logs', 'web-error.log'), 'old line before the run\n')
    host.pm2.add('seed', status='stopped')  # a live app, so the error log offset of web is unknown: whole tail
    err = failing(host, apps=[web(app_dir)])
    failure = err.details['failures'][0]
    assert err.details['app'] == 'web' and failure['why'] == 'crashed'
    assert failure['status'] == 'pm_id 1 crash-looping (online between restarts)'
    assert failure['restarts'] >= 1 and err.details['restarts'] == failure['restarts']
    assert failure['reason'] == ['App [web:0] exited with code [1] via signal [SIGINT] (2 times)']
    assert 'PM2: App [web:0] exited' in str(err)
    assert err.details['changed'] is True and err.details['apps'][0]['status'] == 'crashed'
    assert not os.path.exists(os.path.join(host.pm2_home, 'dump.pm2'))  # a failed run does not save


def test_two_crashing_apps_are_both_named_with_their_tails(host, app_dir):
    host.pm2.crash.update(web=1, api=1)
    logs = os.path.join(host.pm2_home, 'logs')
    write(os.path.join(logs, 'web-out.log'), 'web says goodbye on stdout only\n')
    write(os.path.join(logs, 'api-error.log'), 'Error: api crashing on purpose\n')
    err = failing(host, apps=[web(app_dir), web(app_dir, name='api')])
    assert [f['app'] for f in err.details['failures']] == ['web', 'api']
    text = str(err)
    assert text.startswith('2 apps failed (web, api):')
    assert 'web says goodbye on stdout only' in text and 'Error: api crashing on purpose' in text
    web_logs = err.details['failures'][0]['logs']
    assert web_logs['stdout (%s)' % os.path.join(logs, 'web-out.log')] == ['web says goodbye on stdout only']
    assert web_logs['stderr (%s)' % os.path.join(logs, 'web-error.log')] == []
    assert '(nothing written)' in text


def test_errored_app_is_not_online(host, app_dir):
    host.pm2.errored.add('web')
    err = failing(host, apps=[web(app_dir)])
    assert err.details['failures'][0]['why'] == 'not online' and 'errored' in err.details['status']


def test_online_without_a_process_is_never_ready(host, app_dir):
    host.pm2.pid0.add('web')
    err = failing(host, apps=[web(app_dir, ready_timeout=1)])
    assert err.details['failures'][0]['why'] == 'not ready within ready_timeout'
    assert 'online without a process (pid 0)' in err.details['status']


def test_log_lines_are_bounded_and_clipped(host, app_dir):
    host.pm2.crash['web'] = 1
    write(os.path.join(host.pm2_home, 'logs', 'web-error.log'), ''.join('line %d %s\n' % (n, 'x' * 400) for n in range(50)))
    err = failing(host, apps=[web(app_dir)])
    tail = next(iter(err.details['failures'][0]['logs'].values()))
    assert len(tail) == 10 and tail[-1].startswith('line 49') and tail[-1].endswith(' [...]') and len(tail[-1]) < 320


# ----------------------------------------------------------------- restart baseline for pm2_info

def test_restart_baseline_records_the_counts_after_each_action(host, app_dir):
    item = web(app_dir, instances=2, exec_mode='cluster')
    run(host, apps=[item])
    run(host, apps=[dict(item, state='reloaded')])
    with open(os.path.join(host.pm2_home, 'nodefleet', 'restarts.json')) as handle:
        baseline = json.load(handle)
    assert baseline == {'web': {str(p['pm_id']): 1 for p in host.pm2.named('web')}}
    run(host, apps=[{'name': 'web', 'state': 'absent'}])
    with open(os.path.join(host.pm2_home, 'nodefleet', 'restarts.json')) as handle:
        assert json.load(handle) == {}


# ----------------------------------------------------------------- the module edge

def test_exit_with_turns_domain_errors_into_fail_json(host, app_dir, module_exit):
    module = host.module(name='evil.json', state='absent')
    with pytest.raises(module_exit) as done:
        exit_with(module, lambda: run_pm2_app(module, module.params, False))
    assert done.value.failed and done.value.result['field'] == 'name'
    with pytest.raises(module_exit) as done:
        exit_with(module, lambda: 1 / 0)
    assert done.value.failed and done.value.result['msg'].startswith('unexpected error') and 'exception' in done.value.result
    module = host.module(**web(app_dir))
    with pytest.raises(module_exit) as done:
        exit_with(module, lambda: run_pm2_app(module, module.params, False))
    assert not done.value.failed and done.value.result['action'] == 'start'


def test_restart_baseline_of_other_apps_is_kept(host, app_dir):
    run(host, apps=[web(app_dir), web(app_dir, name='api')])
    run(host, apps=[web(app_dir, name='api', state='reloaded')])
    with open(os.path.join(host.pm2_home, 'nodefleet', 'restarts.json')) as handle:
        baseline = json.load(handle)
    assert sorted(baseline) == ['api', 'web'] and list(baseline['api'].values()) == [1]


# ----------------------------------------------------------------- workers PM2 lost track of

def _sleeper(env):
    """A child process with this environment, returned once it runs (see test__pm2._sleeper)."""
    process = subprocess.Popen([sys.executable, '-c', 'import time; print("ready", flush=True); time.sleep(30)'],
                               env=env, stdout=subprocess.PIPE)
    assert process.stdout.readline() == b'ready\n'
    return process


def test_a_worker_pm2_no_longer_lists_is_stopped_after_a_reload_and_reported(host, app_dir):
    # The fake daemon's pid file names this test process: its children are the daemon's children.
    run(host, apps=[web(app_dir, instances=2, exec_mode='cluster')])
    stray = _sleeper({'pm2_env': json.dumps({'name': 'web', 'pm_id': '_old_0', 'env': {'API_KEY': 'hunter2'}})})
    other_app = _sleeper({'name': 'worker', 'pm_id': '7'})
    try:
        nothing_done = run(host, apps=[web(app_dir, instances=2, exec_mode='cluster')])
        assert 'strays' not in nothing_done and stray.poll() is None  # only apps this run (re)started are looked at
        module = host.module(apps=[web(app_dir, instances=2, exec_mode='cluster', state='reloaded')])
        result = run_pm2_app(module, module.params, False)
        assert result['strays'] == {'web': [stray.pid]}
        assert stray.wait(timeout=5) != 0
        assert other_app.poll() is None  # another app's process is never touched
        assert [w for w in module.warnings if 'no longer tracked' in w] == [
            'stopped processes the supervisor no longer tracked, which still ran older code of the app: web: pid %d' % stray.pid]
        assert 'hunter2' not in json.dumps(result)
        again = run(host, apps=[web(app_dir, instances=2, exec_mode='cluster', state='reloaded')])
        assert 'strays' not in again
    finally:
        for process in (stray, other_app):
            if process.poll() is None:
                process.kill()
                process.wait()
