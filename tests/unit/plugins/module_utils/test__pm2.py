# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later


from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error, SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import (
    MARKER_ENV_DIGEST,
    MARKER_ENV_FILE,
    MARKER_RELEASE,
    MARKER_SPEC,
    Pm2Runner,
    child_pids,
    ecosystem_app,
    env_digest,
    extract_json_array,
    find_strays,
    is_running,
    parse_jlist,
    pm2_identity,
)
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import format_fingerprint, prepare_app


# ----------------------------------------------------------------- parser

def test_parse_real_jlist_groups_by_name_and_drops_modules(read_fixture):
    apps = parse_jlist(read_fixture('jlist_mixed.json'))
    assert sorted(apps) == ['api', 'big', 'crashy', 'web', 'worker']  # pm2-logrotate (pmx_module) dropped
    assert len(apps['api']['instances']) == 2
    assert len(apps['big']['instances']) == 4
    assert apps['big']['exec_mode'] == 'cluster'
    assert apps['web']['exec_mode'] == 'fork'
    assert apps['worker']['namespace'] == 'jobs'
    assert [i['status'] for i in apps['worker']['instances']] == ['stopped']
    assert [i['status'] for i in apps['crashy']['instances']] == ['errored']
    assert apps['web']['script'] == '/tmp/apps/hello/server.js'
    assert apps['web']['version'] == '1.2.3'
    assert not any(a['conflict'] for a in apps.values())


def test_parse_keeps_only_marker_env_values(read_fixture):
    apps = parse_jlist(read_fixture('jlist_mixed.json'))
    assert apps['web']['markers'][MARKER_RELEASE] == '/tmp/apps/hello'
    assert apps['web']['markers'][MARKER_ENV_DIGEST] == 'abc123'
    assert apps['api']['markers'][MARKER_SPEC] is None
    text = json.dumps(apps)
    assert 'dummy' not in text  # scrubbed shell env values in the fixture never survive parsing
    assert '"FOO"' not in text


def test_parse_banner_before_json(read_fixture):
    banner = read_fixture('jlist_cold_banner.txt')
    assert parse_jlist(banner) == {}
    apps = parse_jlist(banner.replace('\n[]', '\n' + read_fixture('jlist_mixed.json')))
    assert len(apps['big']['instances']) == 4


def test_parse_duplicate_name_is_conflict(read_fixture):
    apps = parse_jlist(read_fixture('jlist_duplicate_name.json'))
    assert apps['dup']['conflict'] is True


@pytest.mark.parametrize('text', ['', 'Spawning PM2 daemon\n', '[PM2] not json [x'])
def test_extract_json_array_errors(text):
    with pytest.raises(Pm2Error):
        extract_json_array(text)


# ----------------------------------------------------------------- what PM2 is given

def spec_for(app_dir, **params):
    base = dict(name='web', script=str(app_dir / 'server.js'), cwd=str(app_dir))
    base.update(params)
    return prepare_app(base, 4)


def test_ecosystem_app_markers_and_preload(app_dir):
    spec = spec_for(app_dir, env={'A': '1'}, env_file='app.env', node_args=['--max-old-space-size=64'], args=['-x', '--y'])
    app = ecosystem_app(spec, 'd1g', '/pm2/nodefleet/env-preload.cjs')
    assert app['node_args'] == ['--require', '/pm2/nodefleet/env-preload.cjs', '--max-old-space-size=64']
    assert app['args'] == ['-x', '--y']
    assert app['env'][MARKER_ENV_FILE] == str(app_dir / 'app.env')
    assert app['env'][MARKER_ENV_DIGEST] == 'd1g'
    assert app['env'][MARKER_SPEC] == format_fingerprint(spec['fingerprint'])
    assert app['instances'] == 1
    assert 'env_file' not in app and 'SECRET' not in json.dumps(app)
    # the user-facing fingerprint does not see the preload
    assert spec['pm2']['node_args'] == ['--max-old-space-size=64']


def test_env_digest_is_keyed():
    assert env_digest(b'k1', b'A=1') != env_digest(b'k2', b'A=1')
    assert env_digest(b'k1', b'A=1') == env_digest(b'k1', b'A=1')


# ----------------------------------------------------------------- runner

def test_runner_uses_clean_env_and_argv(read_fixture, fake_module):
    module = fake_module(outputs=[(0, read_fixture('jlist_cold_banner.txt'), '')])
    runner = Pm2Runner(module, pm2_home='/srv/pm2')
    assert runner.jlist() == {}
    argv = module.calls[0]
    assert argv[:2] == ['/usr/bin/env', '-i']
    assert 'PM2_HOME=/srv/pm2' in argv and 'PM2_DISCRETE_MODE=true' in argv and 'LANG=C' in argv
    assert argv[argv.index('/opt/node/bin/pm2') + 1:] == ['jlist']
    assert [a for a in argv if a.startswith('PATH=')][0].startswith('PATH=/opt/node/bin:')
    assert runner.calls == 1


def test_runner_default_home_is_users(fake_module):
    runner = Pm2Runner(fake_module())
    assert runner.pm2_home == os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, '.pm2')
    assert runner.switch_user is False


def test_runner_errors(fake_module):
    # A host with only systemd apps may have no PM2: the runner says so when a pm2 command is really needed.
    runner = Pm2Runner(fake_module(bins={'env': '/usr/bin/env'}))
    assert runner.jlist(spawn=False) == {}
    with pytest.raises(SpecError) as exc:
        runner.run('jlist')
    assert exc.value.field == 'executable'
    with pytest.raises(SpecError) as exc:
        Pm2Runner(fake_module(), executable='/nonexistent/pm2')
    assert exc.value.field == 'executable'
    with pytest.raises(SpecError) as exc:
        Pm2Runner(fake_module(), user='no-such-user-nodefleet')
    assert exc.value.field == 'user'


def test_runner_nonzero_rc_raises(fake_module):
    runner = Pm2Runner(fake_module(outputs=[(1, '', '[PM2][ERROR] Process or Namespace nope not found')]))
    with pytest.raises(Pm2Error) as exc:
        runner.run('reload', 'nope')
    assert 'not found' in str(exc.value)


def test_runner_error_has_no_colour_codes(fake_module):
    runner = Pm2Runner(fake_module(outputs=[(1, '', '\x1b[31m[PM2][ERROR] \x1b[39mReload already in progress')]))
    with pytest.raises(Pm2Error) as exc:
        runner.run('restart', 'api')
    assert str(exc.value) == 'pm2 restart api failed (rc=1): [PM2][ERROR] Reload already in progress'


def _reload_lock(tmp_path, taken_ms, daemon_started):
    (tmp_path / 'reload.lock').write_text(str(taken_ms))
    pid_file = tmp_path / 'pm2.pid'
    pid_file.write_text(str(os.getpid()))  # a live process stands for the daemon
    os.utime(pid_file, (daemon_started, daemon_started))


def test_reload_clears_a_lock_left_by_an_earlier_daemon(fake_module, tmp_path):
    # A power cut in the middle of a reload: the lock predates the daemon that runs now; PM2 would refuse for 30 s.
    _reload_lock(tmp_path, taken_ms=1000000000000, daemon_started=1000000005)
    module = fake_module()
    Pm2Runner(module, pm2_home=str(tmp_path)).run('reload', 'api')
    assert (tmp_path / 'reload.lock').read_text() == ''
    assert module.calls[0][-2:] == ['reload', 'api']


def test_reload_keeps_a_lock_of_the_running_daemon(fake_module, tmp_path):
    # A reload running now (lock taken after the daemon started) is not ours to break.
    _reload_lock(tmp_path, taken_ms=1000000010000, daemon_started=1000000005)
    runner = Pm2Runner(fake_module(), pm2_home=str(tmp_path))
    assert runner.clear_stale_reload_lock() is False
    assert (tmp_path / 'reload.lock').read_text() == '1000000010000'
    (tmp_path / 'reload.lock').write_text('')  # blanked by PM2 at the end of a reload
    assert runner.clear_stale_reload_lock() is False
    (tmp_path / 'pm2.pid').unlink()  # no daemon: nothing to compare with
    assert runner.clear_stale_reload_lock() is False


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root')
def test_runner_switches_user_as_root(fake_module):
    other = [p for p in pwd.getpwall() if p.pw_uid != 0][0]
    module = fake_module()
    runner = Pm2Runner(module, user=other.pw_name)
    runner.run('jlist')
    assert module.calls[0][:4] == ['/usr/sbin/runuser', '-u', other.pw_name, '--']
    assert 'HOME=%s' % other.pw_dir in module.calls[0]


def test_each_instance_keeps_its_own_markers(read_fixture):
    text = read_fixture('jlist_mixed.json')
    procs = json.loads(text)
    big = [p for p in procs if p['name'] == 'big']
    big[1]['pm2_env']['env'][MARKER_RELEASE] = '/srv/big/releases/old'  # an interrupted reload
    apps = parse_jlist(json.dumps(procs))
    releases = [i['release'] for i in apps['big']['instances']]
    assert '/srv/big/releases/old' in releases and len(set(releases)) == 2
    assert all(i['out_log'] and i['err_log'] for i in apps['big']['instances'])


@pytest.mark.parametrize('status, pid, running', [('online', 42, True), ('online', 0, False), ('stopped', 0, False)])
def test_online_needs_a_process(status, pid, running):
    assert is_running({'status': status, 'pid': pid}) is running


# ----------------------------------------------------------------- file helpers

def fail_with(error):
    def fail(*args):
        raise error
    return fail


def test_atomic_write_replaces_in_one_rename_and_cleans_up(tmp_path, monkeypatch):
    from ansible_collections.nodefleet.pm2.plugins.module_utils import _common
    target = tmp_path / 'f'
    _common.atomic_write(str(target), 'one', 0o640)
    assert target.read_text() == 'one' and oct(target.stat().st_mode & 0o777) == '0o640'
    monkeypatch.setattr(_common.os, 'replace', fail_with(OSError('disk full')))
    with pytest.raises(OSError):
        _common.atomic_write(str(target), b'two', 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['f'] and target.read_text() == 'one'


def test_private_temp_file_and_tails(tmp_path, monkeypatch):
    from ansible_collections.nodefleet.pm2.plugins.module_utils import _common
    path = _common.private_temp_file(str(tmp_path), '{}', prefix='eco-', suffix='.json')
    assert os.path.basename(path).startswith('eco-') and oct(os.stat(path).st_mode & 0o777) == '0o600'
    monkeypatch.setattr(_common, '_fill', fail_with(OSError('no space')))
    with pytest.raises(OSError):
        _common.private_temp_file(str(tmp_path), '{}')
    assert len(list(tmp_path.iterdir())) == 1
    log = tmp_path / 'app.log'
    log.write_text('old\nnew\n')
    assert _common.read_tail(str(log), 4) == 'new\n' and _common.read_tail(str(log), 100) == 'old\nnew\n'
    assert _common.read_tail(str(tmp_path / 'missing')) == '' and _common.file_size(str(tmp_path / 'missing')) == 0


# ----------------------------------------------------------------- workers PM2 lost track of

def _sleeper(env):
    """A child process with this environment, returned once it runs (sys.executable may be a shim that execs the
    interpreter: its environment is unreadable for the moment of each exec)."""
    process = subprocess.Popen([sys.executable, '-c', 'import time; print("ready", flush=True); time.sleep(30)'],
                               env=env, stdout=subprocess.PIPE)
    assert process.stdout.readline() == b'ready\n'
    return process


def test_identity_of_a_cluster_worker_a_fork_process_and_a_stranger_read_from_their_environment():
    worker = _sleeper({'pm2_env': json.dumps({'name': 'api', 'pm_id': '_old_0', 'env': {'API_KEY': 'hunter2'}})})
    forked = _sleeper({'name': 'web', 'pm_id': '3', 'API_KEY': 'hunter2'})
    stranger = _sleeper({'HOME': '/'})
    try:
        assert pm2_identity(worker.pid) == ('api', '_old_0')
        assert pm2_identity(forked.pid) == ('web', '3')
        assert pm2_identity(stranger.pid) is None
        assert {worker.pid, forked.pid, stranger.pid} <= set(child_pids(os.getpid()))
    finally:
        for process in (worker, forked, stranger):
            process.kill()
            process.wait()
    assert pm2_identity(worker.pid) is None  # gone
    assert worker.pid not in child_pids(os.getpid())


def test_strays_are_children_of_the_daemon_in_both_reads_running_an_app_acted_on_and_not_listed():
    identity = {10: ('api', '_old_0'), 11: ('api', '1'), 12: ('api', '0'), 13: ('web', '0'),
                14: ('pm2-logrotate', '2'), 15: None, 16: ('api', '0')}.get
    strays = find_strays(first=[10, 11, 12, 13, 14, 15], second=[10, 11, 12, 13, 14, 15, 16], listed={11, 12},
                         identity=identity, names={'api'})
    # 11, 12 listed; 13 an app not acted on; 14 a module; 15 not PM2's; 16 forked between the reads.
    assert strays == {'api': [10]}
    assert find_strays([10], [], set(), identity, {'api'}) == {}  # exited between the reads


def test_stop_processes_interrupts_first_and_kills_what_ignores_it():
    from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_supervisor import stop_processes
    polite = _sleeper({})
    stubborn = subprocess.Popen([sys.executable, '-c', 'import signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); '
                                 'print("ready", flush=True); time.sleep(30)'], stdout=subprocess.PIPE)
    assert stubborn.stdout.readline() == b'ready\n'
    try:
        stop_processes([polite.pid, stubborn.pid], timeout=0.5)
        assert polite.wait(timeout=1) != 0  # KeyboardInterrupt from SIGINT
        assert stubborn.wait(timeout=1) == -9  # SIGKILL after the timeout
    finally:
        for process in (polite, stubborn):
            if process.poll() is None:
                process.kill()
                process.wait()
