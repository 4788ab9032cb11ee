# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pm2_release's steps on a real directory tree, with the pm2_app backend and the health probes replaced."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import subprocess

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils import _release_steps as steps
from ansible_collections.nodefleet.pm2.plugins.module_utils._deploy_apps import AppsError
from ansible_collections.nodefleet.pm2.plugins.module_utils._release import ReleaseLayout, format_record

ME = pwd.getpwuid(os.geteuid()).pw_name
APPS = [{'name': 'api', 'script': '/srv/x/current/server.js', 'cwd': '/srv/x/current'}, {'name': 'old', 'state': 'absent'}]
CHECK = [{'name': 'api', 'port': 1, 'path': '/health', 'status': 200, 'timeout': 1, 'retries': 1, 'delay': 1}]


def params(path, **over):
    base = dict(path=str(path), release='r2', state='active', src=None, checksum=None, remove_src=True, owner=ME, group=None,
                shared_dirs=[], shared_links={}, apps=APPS, health=[], health_attempts=1, health_delay=0, health_final=False,
                soak=0, keep=0, restore=False, rollback=False, run='run1', project=None, lock_dir=None,
                executable=None, pm2_home=None, user=None)
    base.update(over)
    return base


class Backend:
    """Records what pm2_release asks of the pm2_app backend; fail=... makes apply fail like pm2_app does."""

    def __init__(self, monkeypatch, fail=None, restarts=None, healthy=True):
        self.calls = []
        self.fail = fail
        self.restarts = list(restarts or [])
        self.healthy = healthy
        self.status = 'online'
        self.listed = True
        self.restart_on_stop = False
        self.fail_check = False
        monkeypatch.setattr(steps, 'STOP_CHECK_DELAY', 0)
        monkeypatch.setattr(steps, 'apply_apps', self.apply)
        monkeypatch.setattr(steps, 'read_apps', self.read)
        monkeypatch.setattr(steps, 'probe_all', self.probe)

    def apply(self, module, scope, items, check_mode):
        self.calls.append(('apply', check_mode, items))
        if self.fail and not check_mode:
            raise AppsError(self.fail, app='api', log_tails={'api': ['boom']}, changed=True)
        if self.fail and check_mode and self.fail_check:
            # pm2_app's failure result: what it knew so far, 'changed' among it.
            raise AppsError(self.fail, field='apps[0].env_file', app='api', changed=False)
        if not check_mode and items[0].get('state') == 'stopped':
            self.status = 'stopped'
        if not check_mode and items[0].get('state') == 'absent':
            self.listed = False
        actions = [] if check_mode and items[0].get('state') == 'stopped' else ['reload']
        return {'changed': not check_mode, 'apps': [dict(name=i['name'], action='+'.join(actions), actions=actions) for i in items],
                'diff': {'before': {'api': None}, 'after': {'api': {'release': 'r2'}}}}

    def read(self, module, scope):
        count = self.restarts.pop(0) if self.restarts else 0
        if not self.listed:
            return {}
        # A crash-looping cluster worker caught mid-restart: PM2 starts it again after the stop.
        status = 'online' if self.restart_on_stop else self.status
        return {'api': {'instances': [{'status': status, 'restarts': count}]}}

    def probe(self, module, checks, attempts=1, delay=0.5):
        ok = self.healthy if not callable(self.healthy) else self.healthy()
        return dict((c['name'], {'healthy': ok, 'detail': 'HTTP 200' if ok else 'HTTP 503', 'attempts': 1}) for c in checks)


def releases(tmp_path, *names):
    for name in names:
        (tmp_path / 'releases' / name).mkdir(parents=True)


def run(module):
    return steps.ReleaseRun(module).run()


def test_activate_switches_applies_records_and_prunes(tmp_path, monkeypatch, fake_module):
    releases(tmp_path, 'r0', 'r1', 'r2')
    layout = ReleaseLayout(str(tmp_path))
    layout.switch('r1')
    for rel in ('r0', 'r1'):
        layout.record(format_record(rel, 'activated', 'old', []))
    backend = Backend(monkeypatch)
    result = run(fake_module(params(tmp_path, keep=2, health=CHECK)))
    assert result['changed'] and result['switched'] and result['current'] == 'r2' and result['previous'] == 'r1'
    assert os.readlink(tmp_path / 'current') == 'releases/r2'
    assert backend.calls[0][2][0]['release_path'] == str(tmp_path / 'releases' / 'r2')
    assert 'release_path' not in backend.calls[0][2][1]  # absent apps are not pointed anywhere
    assert layout.history()[-1]['outcome'] == 'activated' and layout.history()[-1]['apps'] == APPS
    assert result['pruned'] == ['r0'] and not (tmp_path / 'releases' / 'r0').exists()
    # the same again changes nothing and records nothing
    monkeypatch.setattr(steps, 'apply_apps', lambda *a, **k: {'changed': False, 'apps': []})
    again = run(fake_module(params(tmp_path)))
    assert not again['changed'] and len(layout.history()) == 3


def test_check_mode_plans_against_the_target_and_diffs_current(tmp_path, monkeypatch, fake_module):
    releases(tmp_path, 'r1')
    ReleaseLayout(str(tmp_path)).switch('r1')
    backend = Backend(monkeypatch)
    result = run(fake_module(params(tmp_path, lock_dir=str(tmp_path / 'locks'), project='x'), check_mode=True, diff=True))
    assert result['changed'] and result['present'] is False and result['switched']
    assert backend.calls == [('apply', True, backend.calls[0][2])]
    assert result['diff']['before']['current'] == 'r1' and result['diff']['after']['current'] == 'r2'
    assert result['diff']['after']['apps'] == {'api': {'release': 'r2'}}
    assert os.readlink(tmp_path / 'current') == 'releases/r1' and result['locks'] == {}


def test_first_deploy_plan_checks_user_and_env_files(tmp_path, monkeypatch, fake_module):
    Backend(monkeypatch)
    result = run(fake_module(params(tmp_path), check_mode=True))
    assert [a['action'] for a in result['apps']] == ['start', 'none']
    with pytest.raises(steps.ReleaseError) as err:
        run(fake_module(params(tmp_path, apps=[dict(APPS[0], env_file=str(tmp_path / 'nope.env'))]), check_mode=True))
    assert err.value.details['field'] == 'env_file'
    with pytest.raises(steps.ReleaseError) as err:
        run(fake_module(params(tmp_path, user='no-such-user-here'), check_mode=True))
    assert err.value.details['field'] == 'user'


def test_a_failed_apply_is_recorded_and_reported(tmp_path, monkeypatch, fake_module):
    releases(tmp_path, 'r1', 'r2')
    Backend(monkeypatch, fail='app api crashed')
    with pytest.raises(steps.ReleaseError) as err:
        run(fake_module(params(tmp_path)))
    assert err.value.details['log_tails'] == {'api': ['boom']} and err.value.details['step'] == 'apply'
    assert ReleaseLayout(str(tmp_path)).history()[-1]['outcome'] == 'failed'


def test_inactive_deletes_an_app_pm2_restarts_after_the_stop(tmp_path, monkeypatch, fake_module):
    releases(tmp_path, 'r1')
    ReleaseLayout(str(tmp_path)).switch('r1')
    backend = Backend(monkeypatch)
    backend.restart_on_stop = True
    result = run(fake_module(params(tmp_path, state='inactive', release='', restore=True, apps=APPS[:1])))
    assert result['deleted'] == ['api'] and result['stopped'] == []
    assert backend.calls[-1][2] == [{'name': 'api', 'state': 'absent'}]
    assert not os.path.lexists(tmp_path / 'current')


def test_health_pending_then_final(tmp_path, monkeypatch, fake_module):
    releases(tmp_path, 'r2')
    Backend(monkeypatch, healthy=False)
    result = run(fake_module(params(tmp_path, health=CHECK)))
    assert result['health_pending'] == ['api'] and ReleaseLayout(str(tmp_path)).history() == []
    with pytest.raises(steps.ReleaseError) as err:
        run(fake_module(params(tmp_path, health=CHECK, health_final=True)))
    assert err.value.details['failed_apps'] == ['api'] and 'HTTP 503' in str(err.value)


def test_soak_fails_on_a_restart(tmp_path, monkeypatch, fake_module):
    releases(tmp_path, 'r2')
    Backend(monkeypatch, restarts=[0, 1])
    monkeypatch.setattr(steps.time, 'sleep', lambda s: None)
    with pytest.raises(steps.ReleaseError) as err:
        run(fake_module(params(tmp_path, health=CHECK, soak=1)))
    assert err.value.details['step'] == 'soak' and 'api restarted' in str(err.value)


def test_restore_marks_the_release_left_and_uses_its_recorded_apps(tmp_path, monkeypatch, fake_module):
    releases(tmp_path, 'r1', 'r2')
    layout = ReleaseLayout(str(tmp_path))
    layout.record(format_record('r1', 'activated', 'old', [{'name': 'api', 'script': '/old.js'}]))
    layout.switch('r2')
    layout.record(format_record('r2', 'activated', 'run1', APPS))
    backend = Backend(monkeypatch)
    result = run(fake_module(params(tmp_path, release='r1', restore=True)))
    assert result['apps_from'] == 'history' and backend.calls[0][2][0]['script'] == '/old.js'
    assert [(r['release'], r['outcome']) for r in layout.history()[-2:]] == [('r2', 'rolled_back'), ('r1', 'restored')]
    assert result['rollback_target'] == 'r1'  # before the call: the healthy one before r2


def test_restore_after_a_host_never_healthy_records_it_failed(tmp_path, monkeypatch, fake_module):
    releases(tmp_path, 'r1', 'r2')
    layout = ReleaseLayout(str(tmp_path))
    layout.record(format_record('r1', 'activated', 'old', APPS))
    layout.switch('r2')
    Backend(monkeypatch)
    run(fake_module(params(tmp_path, release='r1', restore=True)))
    assert [(r['release'], r['outcome']) for r in layout.history()] == [('r1', 'activated'), ('r2', 'failed'), ('r1', 'restored')]


def test_rollback_chooses_and_says_why(tmp_path, monkeypatch, fake_module):
    releases(tmp_path, 'r1', 'r2', 'r3')
    layout = ReleaseLayout(str(tmp_path))
    for rel, outcome in (('r1', 'activated'), ('r3', 'failed'), ('r2', 'activated')):
        layout.record(format_record(rel, outcome, 'x', APPS))
    layout.switch('r2')
    Backend(monkeypatch)
    result = run(fake_module(params(tmp_path, release='', rollback=True), check_mode=True))
    assert result['release'] == 'r1' and 'r3 (failed)' in result['rollback_reason']
    layout.switch('r1')
    (tmp_path / 'releases' / 'r2').rmdir()
    with pytest.raises(steps.ReleaseError) as err:
        run(fake_module(params(tmp_path, release='', rollback=True)))
    assert 'nothing to roll back to' in str(err.value)


def test_missing_release_and_bad_ids(tmp_path, monkeypatch, fake_module):
    Backend(monkeypatch)
    with pytest.raises(steps.ReleaseError):
        run(fake_module(params(tmp_path, release='nope')))
    with pytest.raises(steps.ReleaseError) as err:
        run(fake_module(params(tmp_path, release='../x')))
    assert err.value.details['field'] == 'release'
    with pytest.raises(steps.ReleaseError) as err:
        run(fake_module(params(tmp_path, apps=None)))
    assert err.value.details['field'] == 'apps'


def test_inactive_stops_what_runs_and_removes_current(tmp_path, monkeypatch, fake_module):
    releases(tmp_path, 'r1')
    ReleaseLayout(str(tmp_path)).switch('r1')
    backend = Backend(monkeypatch)
    result = run(fake_module(params(tmp_path, state='inactive', release='', restore=True, apps=APPS[:1])))
    assert result['stopped'] == ['api'] and result['current'] == '' and not os.path.lexists(tmp_path / 'current')
    assert backend.calls[-1][2] == [{'name': 'api', 'state': 'stopped'}]
    assert ReleaseLayout(str(tmp_path)).history()[-1]['outcome'] == 'failed'


def artifact(tmp_path):
    tree = tmp_path / 'tree'
    (tree / 'dist').mkdir(parents=True)
    (tree / 'dist' / 'server.js').write_text('//')
    (tree / 'logs').mkdir()
    (tree / 'logs' / 'shipped.log').write_text('x')
    tarball = tmp_path / 'a.tar.gz'
    subprocess.run(['tar', '-C', str(tree), '-czf', str(tarball), '.'], check=True)
    return tarball, hashlib.sha256(tarball.read_bytes()).hexdigest()


class Unpacker:
    """run_command and digest_from_file of AnsibleModule, for real: tar runs."""

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return '/bin/tar' if os.path.exists('/bin/tar') else '/usr/bin/tar'

    def run_command(self, args, cwd=None):
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    @staticmethod
    def digest_from_file(path, algorithm):
        return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def test_present_unpacks_checks_and_links(tmp_path, fake_module):
    tarball, digest = artifact(tmp_path)
    deploy = tmp_path / 'srv'
    module = fake_module(params(deploy, state='present', src=str(tarball), checksum=digest, shared_dirs=['logs'],
                                shared_links={'.env': '/etc/app.env'}))
    module.get_bin_path, module.run_command, module.digest_from_file = Unpacker().get_bin_path, Unpacker().run_command, Unpacker.digest_from_file
    result = run(module)
    release = deploy / 'releases' / 'r2'
    assert result['changed'] and result['on_disk'] == ['r2'] and (release / 'dist' / 'server.js').exists()
    assert os.readlink(release / 'logs') == '../../shared/logs' and (deploy / 'shared' / 'logs').is_dir()
    assert os.readlink(release / '.env') == '/etc/app.env' and not tarball.exists()
    assert not run(module)['changed']  # present already


def test_present_refuses_a_wrong_checksum_and_leaves_nothing(tmp_path, fake_module):
    tarball, digest = artifact(tmp_path)
    module = fake_module(params(tmp_path / 'srv', state='present', src=str(tarball), checksum='0' * 64))
    module.digest_from_file = Unpacker.digest_from_file
    with pytest.raises(steps.ReleaseError) as err:
        run(module)
    assert err.value.details['field'] == 'checksum' and not (tmp_path / 'srv' / 'releases').exists()
    with pytest.raises(steps.ReleaseError):
        run(fake_module(params(tmp_path / 'srv', state='present')))


def test_module_edge_fails_with_the_details(tmp_path, monkeypatch, fake_module, module_exit):
    Backend(monkeypatch, fail='app api crashed')
    releases(tmp_path, 'r2')
    with pytest.raises(module_exit) as done:
        steps.run_release(fake_module(params(tmp_path)))
    assert done.value.failed and done.value.result['step'] == 'apply' and done.value.result['log_tails'] == {'api': ['boom']}
    assert done.value.result['changed'] is True  # the failed apply may have changed the host
    (tmp_path / 'locks').mkdir()
    (tmp_path / 'locks' / 'x.api.lock').write_text(json.dumps({'token': 't', 'time': 1}))
    with pytest.raises(module_exit) as done:
        steps.run_release_info(fake_module(params(tmp_path, project='x', lock_dir=str(tmp_path / 'locks'))))
    assert not done.value.failed and done.value.result['locks']['api']['token'] == 't' and 'api' in done.value.result['apps']


def test_a_plan_refused_by_pm2_app_fails_naming_the_app(tmp_path, monkeypatch, fake_module, module_exit):
    # An env file missing on the host: pm2_app refuses in check mode, with its own 'changed' in the details.
    backend = Backend(monkeypatch, fail='apps[0].env_file: /etc/x.env does not exist')
    backend.fail_check = True
    releases(tmp_path, 'r1', 'r2')
    ReleaseLayout(str(tmp_path)).switch('r1')
    with pytest.raises(module_exit) as done:
        steps.run_release(fake_module(params(tmp_path, release='r2'), check_mode=True))
    assert done.value.failed and done.value.result['changed'] is False
    assert done.value.result['msg'] == 'apps[api].env_file: /etc/x.env does not exist'
    assert done.value.result['field'] == 'apps[api].env_file'
