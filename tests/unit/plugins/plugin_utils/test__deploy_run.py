# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run settings, the release id of a tree, and the decision after every host was read."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.nodefleet.pm2.plugins.plugin_utils._deploy_inputs import InputError
from ansible_collections.nodefleet.pm2.plugins.plugin_utils._deploy_run import decide, hooks, run_settings, source_settings, tree_hash

RUN_VARS = {
    'pm2_deploy_serial': 1, 'pm2_deploy_max_fail_percentage': 0, 'pm2_deploy_lb_host': 'lb',
    'pm2_deploy_lb_socket': '/run/haproxy/admin.sock', 'pm2_deploy_lb_drain_timeout': 30, 'pm2_deploy_lb_grace': 1,
    'pm2_deploy_lock_dir': '/var/lib/nodefleet/deploy-locks', 'pm2_deploy_lock_ttl': 3600, 'pm2_deploy_canary_soak': 0,
    'pm2_deploy_report_dir': '/tmp/r', 'pm2_deploy_rollback_to': '', 'pm2_deploy_source_path': '/src',
    'pm2_deploy_git_repo': '', 'pm2_deploy_artifact': '', 'pm2_deploy_release': '', 'pm2_deploy_build_host': 'localhost',
}


def settings(mode='deploy', **changes):
    v = dict(RUN_VARS, **changes)
    return run_settings(v, mode, {'lb', 'node1'})


def test_settings():
    run = settings(pm2_deploy_serial=[1, '50%'])
    assert run['serial'] == [1, '50%'] and run['source']['kind'] == 'path'


@pytest.mark.parametrize('change, message', [
    ({'pm2_deploy_lb_host': 'nope'}, "pm2_deploy_lb_host: 'nope' is not an inventory host"),
    ({'pm2_deploy_serial': 'abc'}, 'pm2_deploy_serial'),
    ({'pm2_deploy_max_fail_percentage': 101}, 'pm2_deploy_max_fail_percentage'),
    ({'pm2_deploy_git_repo': 'git@x:y.git'}, 'set exactly one of'),
    ({'pm2_deploy_source_path': ''}, 'set exactly one of'),
    ({'pm2_deploy_source_path': '', 'pm2_deploy_artifact': '/a.tgz'}, 'pm2_deploy_artifact_sha256'),
    ({'pm2_deploy_release': '../x'}, 'pm2_deploy_release'),
    ({'pm2_deploy_rollback_to': 'a b'}, 'pm2_deploy_rollback_to'),
])
def test_bad_run_settings(change, message):
    with pytest.raises(InputError) as err:
        settings(**change)
    assert message in str(err.value)


def test_source_path_is_expanded_and_artifact_gives_the_release():
    assert source_settings(dict(RUN_VARS, pm2_deploy_source_path='~/src/app'))['path'] == os.path.expanduser('~/src/app')
    art = source_settings(dict(RUN_VARS, pm2_deploy_source_path='', pm2_deploy_artifact='https://ci/x.tgz',
                               pm2_deploy_artifact_sha256='A' * 64))
    assert art['url'] and art['release'] == 'a' * 12 and art['sha256'] == 'a' * 64


def test_old_switch_hook_names_still_work():
    found = hooks({'pm2_deploy_before_switch_tasks_file': 'x.yml', 'pm2_deploy_after_activate_tasks_file': 'y.yml'})
    assert found['before_activate'] == 'x.yml' and found['after_activate'] == 'y.yml' and found['before_build'] == ''


def test_tree_hash_matches_the_shell_pipeline(tmp_path):
    (tmp_path / 'src').mkdir()
    (tmp_path / 'src' / 'server.js').write_text('x')
    (tmp_path / 'package.json').write_text('{}')
    (tmp_path / 'node_modules').mkdir()
    (tmp_path / 'node_modules' / 'dep.js').write_text('y')
    (tmp_path / 'link').symlink_to('package.json')
    shell = subprocess.run(['bash', '-c', "set -o pipefail; find . \\( -name .git -o -name node_modules \\) -prune -o -type f -print0"
                            " | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12"],
                           cwd=str(tmp_path), capture_output=True, text=True, check=True).stdout.strip()
    assert tree_hash(str(tmp_path), ['.git', 'node_modules']) == shell
    with pytest.raises(InputError):
        tree_hash(str(tmp_path / 'missing'), [])


RUN = {'mode': 'deploy', 'token': 'tok', 'controller': 'ctl', 'lock_ttl': 3600, 'lock_dir': '/locks'}


def host_in(**over):
    base = {'project': 'shop', 'to': '/srv/shop', 'min_free_mb': 10, 'lb_servers': [{'backend': 'api', 'server': 'h', 'app': 'api'}]}
    base.update(over)
    return base


def plan(**over):
    base = {'release': 'B', 'previous': 'A', 'present': True, 'switched': True, 'apps': [{'name': 'api', 'action': 'reload'}],
            'locks': {}, 'now': 10000, 'free_mb': 1000, 'current_outcome': 'activated', 'leftovers': []}
    base.update(over)
    return base


def test_decide_ship_roll_noop():
    results = {'h1': plan(present=False), 'h2': plan(previous='B', switched=False, apps=[{'name': 'api', 'action': 'none'}]),
               'h3': plan(previous='B', switched=False, apps=[{'name': 'api', 'action': 'reload'}])}
    d = decide(RUN, ['h1', 'h2', 'h3'], results, dict((h, host_in()) for h in results), lambda pid: True)
    assert d['ship'] == ['h1'] and d['roll'] == ['h1', 'h3'] and d['noop'] == ['h2'] and d['lock'] == ['h1', 'h3']
    assert d['hosts']['h3']['drain'] == [{'backend': 'api', 'server': 'h'}]


def test_decide_refuses_with_every_reason():
    results = {'h1': {'failed': True, 'msg': 'env_file: /x does not exist'}, 'h2': {'unreachable': True, 'msg': 'ssh: timeout'}}
    with pytest.raises(InputError) as err:
        decide(RUN, ['h1', 'h2'], results, {}, lambda pid: True)
    assert 'h1: env_file: /x does not exist' in str(err.value) and 'h2: unreachable: ssh: timeout' in str(err.value)


def test_live_locks_refuse_dead_and_stale_ones_make_a_host_half_done():
    live = {'token': 'x', 'controller': 'other', 'pid': 5, 'time': 9990, 'user': 'bob', 'started': 'then'}
    with pytest.raises(InputError) as err:
        decide(RUN, ['h1'], {'h1': plan(locks={'api': live})}, {'h1': host_in()}, lambda pid: True)
    assert 'another deploy holds the lock, nothing was changed' in str(err.value)
    assert 'api locked by bob@other pid 5 since then (/locks/shop.api.lock)' in str(err.value)
    dead = dict(live, controller='ctl', token='gone')
    stale = dict(live, token='old', time=1)
    d = decide(RUN, ['h1'], {'h1': plan(previous='B', switched=False, apps=[], locks={'api': dead, 'web': stale})},
               {'h1': host_in()}, lambda pid: False)
    assert d['dead_tokens'] == ['gone'] and d['roll'] == ['h1'] and 'h1' in d['half_done']
    assert d['hosts']['h1']['enable'] == [{'backend': 'api', 'server': 'h'}]


def test_disk_and_rollback_agreement():
    with pytest.raises(InputError) as err:
        decide(RUN, ['h1'], {'h1': plan(present=False, free_mb=5)}, {'h1': host_in()}, lambda pid: True)
    assert 'h1: 5 MiB free for /srv/shop, pm2_deploy_min_free_mb is 10' in str(err.value)
    rollback = dict(RUN, mode='rollback')
    with pytest.raises(InputError) as err:
        decide(rollback, ['h1', 'h2'], {'h1': plan(release='A'), 'h2': plan(release='Z')}, {'h1': host_in(), 'h2': host_in()},
               lambda pid: True)
    assert 'do not agree' in str(err.value)


def test_processes_off_current_make_a_host_half_done_and_roll():
    # A power cut or Ctrl-C mid-reload: current is B, a worker of api still runs A; the plan reloads api.
    result = plan(previous='B', switched=False, apps=[{'name': 'api', 'action': 'reload'}], current='B', off_current={'api': ['A', 'B']})
    d = decide(RUN, ['h1'], {'h1': result}, {'h1': host_in()}, lambda pid: True)
    assert d['roll'] == ['h1']
    assert d['half_done']['h1'] == 'processes not on current (B): api runs A, B'
    assert d['hosts']['h1']['enable'] == [{'backend': 'api', 'server': 'h'}]


def test_check_mode_decides_but_no_step_runs():
    d = decide(dict(RUN, check_mode=True), ['h1'], {'h1': plan(present=False)}, {'h1': host_in()}, lambda pid: True)
    assert d['ship'] == d['roll'] == d['lock'] == []
    assert d['would'] == {'ship': ['h1'], 'roll': ['h1'], 'lock': ['h1']}
