# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import shutil
from unittest.mock import MagicMock

import pytest
import yaml

from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import VaultLib, VaultSecret

from ansible_collections.nodefleet.pm2.plugins.action.pm2_import import ActionModule

FIXTURES = os.path.join(os.path.dirname(__file__), '..', 'module_utils', 'fixtures', 'ecosystems')
PASSWORD = b'unit-test-vault-password'
needs_node = pytest.mark.skipif(shutil.which('node') is None, reason='node is not installed')


def run(args, check_mode=False):
    task = MagicMock()
    task.args = args
    task.async_val = 0
    task.check_mode = check_mode
    task.diff = False
    action = ActionModule(task=task, connection=MagicMock(), play_context=MagicMock(), loader=DataLoader(),
                          templar=MagicMock(), shared_loader_obj=None)
    return action.run(task_vars={})


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / 'vault-pass.txt').write_bytes(PASSWORD + b'\n')
    return tmp_path


def args(workdir, seed, **extra):
    base = dict(src=os.path.join(FIXTURES, seed), dest=str(workdir / 'inventory'), vault_password_file=str(workdir / 'vault-pass.txt'))
    base.update(extra)
    return base


def seed_key():
    with open(os.path.join(FIXTURES, 'crm-backend.ecosystem.config.js')) as handle:
        return [line for line in handle if line.startswith('const ESIGN_PRIVATE_KEY')][0].split("'")[1]


def read_tree(root):
    out = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            with open(path, 'rb') as handle:
                out[os.path.relpath(path, root)] = handle.read()
    return out


@needs_node
def test_import_writes_encrypts_and_never_echoes_the_secret(workdir):
    result = run(args(workdir, 'crm-backend.ecosystem.config.js'))
    assert result['changed'] and not result.get('failed'), result
    key = seed_key()
    assert key[:40] not in json.dumps(result)
    assert [s['var'] for s in result['secrets_moved']] == ['vault_backend_dev_esign_private_key', 'vault_backend_prod_esign_private_key']
    tree = read_tree(str(workdir / 'inventory'))
    for rel, data in tree.items():
        assert key[:40].encode() not in data, rel
    vault = VaultLib([('default', VaultSecret(PASSWORD))])
    secrets = tree['group_vars/all/pm2_secrets.yml']
    assert secrets.startswith(b'$ANSIBLE_VAULT;1.1;AES256')
    assert key.encode() in vault.decrypt(secrets)
    assert oct(os.stat(str(workdir / 'inventory/group_vars/all/pm2_secrets.yml')).st_mode & 0o777) == '0o600'


@needs_node
def test_second_run_changes_nothing_and_differing_files_are_refused(workdir):
    assert run(args(workdir, 'crm-backend.ecosystem.config.js'))['changed']
    before = read_tree(str(workdir / 'inventory'))
    again = run(args(workdir, 'crm-backend.ecosystem.config.js'))
    assert again['changed'] is False and not again.get('failed') and again['written'] == []
    assert read_tree(str(workdir / 'inventory')) == before  # not even re-encrypted

    hosts = workdir / 'inventory' / 'hosts.yml'
    hosts.write_text(hosts.read_text() + '# my hosts\n')
    refused = run(args(workdir, 'crm-backend.ecosystem.config.js'))
    assert refused['failed'] and 'refusing to overwrite' in refused['msg'] and 'hosts.yml' in refused['msg']
    assert hosts.read_text().endswith('# my hosts\n')

    forced = run(args(workdir, 'crm-backend.ecosystem.config.js', force=True))
    assert forced['changed'] and forced['written'] == [str(hosts)]


@needs_node
def test_other_vault_password_means_different(workdir):
    run(args(workdir, 'crm-backend.ecosystem.config.js'))
    (workdir / 'other.txt').write_text('another password\n')
    refused = run(args(workdir, 'crm-backend.ecosystem.config.js', vault_password_file=str(workdir / 'other.txt')))
    assert refused['failed'] and 'pm2_secrets.yml' in refused['msg']


@needs_node
def test_secrets_without_password_fail_before_writing(workdir):
    result = run(dict(src=os.path.join(FIXTURES, 'crm-backend.ecosystem.config.js'), dest=str(workdir / 'inventory')))
    assert result['failed'] and 'vault_password_file' in result['msg'] and 'ESIGN_PRIVATE_KEY' in result['msg']
    assert not os.path.exists(str(workdir / 'inventory'))
    assert seed_key()[:40] not in json.dumps(result)


@needs_node
def test_check_mode_writes_nothing(workdir):
    result = run(args(workdir, 'trackflow.ecosystem.config.js'), check_mode=True)
    assert result['changed'] and len(result['written']) == 2
    assert not os.path.exists(str(workdir / 'inventory'))


def test_no_secrets_no_password_needed(workdir):
    result = run(dict(src=os.path.join(FIXTURES, 'plain.yml'), dest=str(workdir / 'inv'), plain_names=['SIGNING_KEY']))
    assert result['changed'] and result['secrets_moved'] == [] and result['renamed'] == [{'from': 'Worker_1', 'to': 'worker-1'}]


@needs_node
def test_errors_do_not_leak(workdir):
    result = run(args(workdir, 'broken.config.js'))
    assert result['failed'] and 'SyntaxError' in result['msg'] and 'Q2hhbmdl' not in json.dumps(result)


def test_arguments_tagged_by_ansible_core(workdir):
    """ansible-core 2.19 hands over module arguments tagged with their origin (subclasses of str, dict, ...); the
    YAML dumper did not know those types, so every import run by Ansible failed with a RepresenterError."""
    tags = pytest.importorskip('ansible._internal._datatag._tags')
    origin = tags.Origin(path=str(workdir / 'playbook.yml'), line_num=1)
    result = run(args(workdir, 'plain.json', user=origin.tag('deploy'), health=origin.tag({'port': 8080}),
                      secret_names=origin.tag(['OTHER'])))
    assert result['changed'] and not result.get('failed'), result
    data = yaml.safe_load((workdir / 'inventory' / 'group_vars' / 'all' / 'pm2_apps.yml').read_text())
    assert data['pm2_deploy_user'] == 'deploy' and data['pm2_deploy_apps'][0]['health'] == {'port': 8080}
