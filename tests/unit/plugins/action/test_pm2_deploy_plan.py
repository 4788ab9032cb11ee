# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The controller side of the deploy through its action plugin: each step with the variables a play gives it."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from unittest.mock import MagicMock

import yaml

from ansible.parsing.dataloader import DataLoader

from ansible_collections.nodefleet.pm2.plugins.action.pm2_deploy_plan import ActionModule, _alive, _ansible_playbook_pid

ROLE = os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', 'roles', 'pm2_deploy')
APPS = [{'name': 'api', 'script': 'dist/server.js', 'exec_mode': 'cluster', 'instances': 2, 'health': {'port': 3000},
         'lb_backend': 'api'},
        {'name': 'billing', 'script': 'dist/server.js', 'singleton': 'fleet', 'run_on': 'h1', 'health': {'port': 3001}}]


def host_vars(tmp_path, host='h1', **over):
    with open(os.path.join(ROLE, 'defaults', 'main.yml')) as handle:
        values = yaml.safe_load(handle)
    values = dict((k, v) for k, v in values.items() if '{{' not in str(v))
    src = tmp_path / 'src'
    src.mkdir(exist_ok=True)
    (src / 'server.js').write_text('//')
    values.update(pm2_deploy_project='shop', pm2_deploy_to='/srv/shop', pm2_deploy_group='app', pm2_deploy_lb_host='lb',
                  pm2_deploy_apps=copy.deepcopy(APPS), pm2_deploy_source_path=str(src), pm2_deploy_report_dir=str(tmp_path / 'reports'),
                  pm2_runtime_users=[{'name': 'app', 'pm2_home': '/var/lib/app-pm2'}], pm2_runtime_pm2_bin='/usr/local/bin/pm2',
                  inventory_hostname=host, group_names=['prod'], playbook_dir=str(tmp_path),
                  groups={'all': ['h1', 'h2', 'lb'], 'prod': ['h1', 'h2'], 'lb': ['lb']})
    values.update(over)
    return values


def run(args, task_vars, check_mode=False):
    task = MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = check_mode
    task.diff = False
    templar = MagicMock()
    templar.template = lambda value: value
    play_context = MagicMock()
    play_context.check_mode = check_mode
    action = ActionModule(task=task, connection=MagicMock(), play_context=play_context, loader=DataLoader(), templar=templar,
                          shared_loader_obj=None)
    return action.run(task_vars=task_vars)


def test_host_step_resolves_with_pm2_runtime_defaults(tmp_path):
    result = run({'step': 'host'}, host_vars(tmp_path))
    inputs = result['ansible_facts']['_pm2_deploy_host']
    assert inputs['scope'] == {'user': 'app', 'pm2_home': '/var/lib/app-pm2', 'executable': '/usr/local/bin/pm2'}
    assert [a['name'] for a in inputs['apps']] == ['api', 'billing']
    bad = run({'step': 'host'}, host_vars(tmp_path, pm2_deploy_serial=1, pm2_deploy_keep_releases=1))
    assert bad['failed'] and bad['msg'] == 'pm2_deploy: h1: pm2_deploy_keep_releases: must be at least 2, got 1'


def fleet(tmp_path, **over):
    hosts = {}
    for host in ('h1', 'h2'):
        hosts[host] = run({'step': 'host'}, host_vars(tmp_path, host=host, **over))['ansible_facts']
    return hosts


def test_run_step_checks_topology_source_hooks_and_identity(tmp_path):
    hostvars = fleet(tmp_path)
    result = run({'step': 'run', 'hosts': ['h1', 'h2']}, dict(host_vars(tmp_path), hostvars=hostvars))
    data = result['ansible_facts']['_pm2_deploy_run']
    assert len(data['source']['release']) == 12 and data['serial'] == [1] and data['owner']['token'] == data['token']
    assert data['hooks']['before_activate'] == '' and data['check_mode'] is False
    hostvars['h2']['_pm2_deploy_host']['apps'][1:] = [dict(hostvars['h1']['_pm2_deploy_host']['apps'][1])]
    result = run({'step': 'run', 'hosts': ['h1', 'h2']}, dict(host_vars(tmp_path), hostvars=hostvars))
    assert result['failed'] and 'billing is a fleet singleton but would run on 2 hosts' in result['msg']
    missing_hook = host_vars(tmp_path, pm2_deploy_after_ship_tasks_file='nope.yml')
    result = run({'step': 'run', 'hosts': ['h1']}, dict(missing_hook, hostvars=fleet(tmp_path)))
    assert result['failed'] and 'pm2_deploy_after_ship_tasks_file: nope.yml not found' in result['msg']
    no_source = host_vars(tmp_path, pm2_deploy_source_path=str(tmp_path / 'gone'))
    result = run({'step': 'run', 'hosts': ['h1']}, dict(no_source, hostvars=fleet(tmp_path)))
    assert result['failed'] and 'is not a directory on the controller' in result['msg']


def test_artifact_checksum_is_checked_before_anything(tmp_path):
    tarball = tmp_path / 'a.tar.gz'
    tarball.write_bytes(b'artifact')
    good = hashlib.sha256(b'artifact').hexdigest()
    base = dict(pm2_deploy_source_path='', pm2_deploy_artifact=str(tarball))
    result = run({'step': 'run', 'hosts': ['h1']}, dict(host_vars(tmp_path, pm2_deploy_artifact_sha256=good, **base), hostvars=fleet(tmp_path)))
    assert result['ansible_facts']['_pm2_deploy_run']['source']['release'] == good[:12]
    result = run({'step': 'run', 'hosts': ['h1']}, dict(host_vars(tmp_path, pm2_deploy_artifact_sha256='0' * 64, **base), hostvars=fleet(tmp_path)))
    assert result['failed'] and 'pm2_deploy_artifact_sha256' in result['msg'] and 'nothing was changed' in result['msg']


def plan(current, **over):
    result = {'release': 'B', 'previous': current, 'present': current == 'B', 'switched': current != 'B',
              'apps': [{'name': 'api', 'action': 'none' if current == 'B' else 'reload'}], 'locks': {}, 'now': 100,
              'free_mb': 9999, 'current_outcome': 'activated', 'leftovers': []}
    result.update(over)
    return result


def test_decide_summary_and_status(tmp_path):
    hostvars = fleet(tmp_path)
    run_facts = run({'step': 'run', 'hosts': ['h1', 'h2']}, dict(host_vars(tmp_path), hostvars=hostvars))['ansible_facts']
    hostvars['localhost'] = run_facts
    hostvars['h1']['__pm2_deploy_plan'] = plan('A')
    hostvars['h2']['__pm2_deploy_plan'] = plan('B')
    decided = run({'step': 'decide', 'hosts': ['h1', 'h2']}, {'hostvars': hostvars})['ansible_facts']['_pm2_deploy_decision']
    assert decided['roll'] == ['h1'] and decided['noop'] == ['h2'] and decided['ship'] == ['h1']
    hostvars['localhost']['_pm2_deploy_decision'] = decided
    hostvars['h1']['_pm2_deploy_report'] = {'outcome': 'deployed', 'batch': 1, 'work': 3.0, 'actions': {'api': 'reload'}}
    hostvars['localhost']['_pm2_deploy_batches'] = [{'number': 1, 'hosts': ['h1'], 'wall': 4.0, 'work': 3.0}]
    summary = run({'step': 'summary'}, {'hostvars': hostvars})
    assert summary['failure_message'] == '' and summary['lines'][0].endswith('1 deployed, 1 unchanged')
    with open(summary['report']) as handle:
        assert json.load(handle)['hosts'][0]['host'] == 'h1'
    failed = run({'step': 'decide', 'hosts': ['h1']}, {'hostvars': dict(hostvars, h1=dict(hostvars['h1'], __pm2_deploy_plan={'failed': True, 'msg': 'boom'}))})
    assert failed['failed'] and 'h1: boom' in failed['msg']
    api = {'supervisor': 'pm2', 'instances_online': 2, 'instances': [{'status': 'online', 'restarts': 1}]}
    hostvars['h1']['__pm2_deploy_status'] = {'current': 'B', 'apps': {'api': api}}
    hostvars['h2']['__pm2_deploy_status'] = {'unreachable': True, 'msg': 'ssh'}
    out = tmp_path / 'fleet.json'
    status = run({'step': 'status', 'hosts': ['h1', 'h2'], 'results': '__pm2_deploy_status', 'status_json': str(out)},
                 {'hostvars': hostvars})
    rows = json.loads(out.read_text())
    expected = [('h1', 'api', 'online'), ('h1', 'billing', 'absent'), ('h2', '-', 'unreachable')]
    assert [(r['host'], r['app'], r['status']) for r in rows] == expected
    assert status['lines'][0].startswith('host')


def test_process_helpers():
    assert _ansible_playbook_pid() == 0  # pytest is not run by ansible-playbook
    assert _alive(os.getpid()) is False and _alive(2 ** 22 + 7) is False
