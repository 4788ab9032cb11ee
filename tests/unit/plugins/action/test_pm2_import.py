# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import shutil
import sys
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


def decrypted_tree(root):
    """Every output file as text, the encrypted ones decrypted."""
    vault = VaultLib([('default', VaultSecret(PASSWORD))])
    return {rel: (vault.decrypt(data) if data.startswith(b'$ANSIBLE_VAULT') else data).decode() for rel, data in read_tree(root).items()}


@needs_node
def test_a_symlink_out_of_the_directory_never_reaches_the_files_or_the_result(workdir):
    """Issue 15: a link in the ecosystem file's directory read a file outside it and its content landed in the vault."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'module_utils'))
    try:
        from test__ecosystem import OUTSIDE_SECRET, symlink_project
    finally:
        sys.path.pop(0)
    src = symlink_project(workdir / 'tree')
    result = run(dict(src=str(src), dest=str(workdir / 'inventory'), vault_password_file=str(workdir / 'vault-pass.txt'),
                      plain_names=['READ_INSIDE_LINK']))
    assert result['changed'] and not result.get('failed'), result
    assert OUTSIDE_SECRET not in json.dumps(result)
    tree = decrypted_tree(str(workdir / 'inventory'))
    assert 'group_vars/all/pm2_apps.yml' in tree
    for rel, text in tree.items():
        assert OUTSIDE_SECRET not in text, rel
    assert any('link.txt, which is outside its directory' in note for note in result['notes'])
    assert yaml.safe_load(tree['group_vars/all/pm2_apps.yml'])['pm2_env_apps'][0]['vars'] == {'READ_INSIDE_LINK': 'inside value'}


@needs_node
def test_a_file_that_logs_while_loading_is_imported_and_the_result_says_so(workdir):
    result = run(args(workdir, 'prints.config.js'))
    assert result['changed'] and not result.get('failed') and result['apps'] == ['chatty'], result
    assert result['notes'][0].startswith('prints.config.js printed 80 bytes on stdout while it was evaluated')
    assert 'loading the ecosystem file' not in json.dumps(result)


def test_the_import_writes_what_pm2_runtime_and_pm2_logrotate_need(workdir):
    result = run(args(workdir, 'plain.yml', user='worker'))
    assert result['changed'] and result['runtime_users'] == ['worker'] and result['logrotate_apps'] == ['worker-1'], result
    data = yaml.safe_load((workdir / 'inventory' / 'group_vars' / 'all' / 'pm2_apps.yml').read_text())
    assert data['pm2_deploy_user'] == 'worker'
    assert data['pm2_runtime_users'] == [{'name': '{{ pm2_deploy_user }}'}]
    assert data['pm2_logrotate_apps'] == [{'name': 'worker-1', 'user': '{{ pm2_deploy_user }}'}]


@pytest.mark.parametrize('extra, message', [
    (dict(src='/nonexistent/ecosystem.config.js'), 'src: /nonexistent/ecosystem.config.js does not exist'),
    (dict(user='Bad User'), "user: 'Bad User' is not a user name"),
    (dict(user='root'), 'user: root is refused'),
    (dict(health={'port': 'http'}), 'health.port: must be a port number'),
    (dict(timeout=-5), 'timeout: must be from 1 to 600 seconds'),
    (dict(environment={'NODE_OPTIONS': '--allow-fs-read=*'}), 'environment.NODE_OPTIONS: refused'),
    (dict(vault_password_file='/nonexistent/pass'), 'vault_password_file: /nonexistent/pass does not exist'),
    (dict(node_executable='/nonexistent/node'), 'node_executable: /nonexistent/node not found'),
])
def test_bad_options_fail_naming_the_option_and_write_nothing(workdir, extra, message):
    base = args(workdir, 'trackflow.ecosystem.config.js')
    base.update(extra)
    result = run(base)
    assert result.get('failed') and result['msg'].startswith(message), result
    assert not os.path.exists(str(workdir / 'inventory'))


def test_an_empty_vault_password_fails_naming_the_option(workdir):
    (workdir / 'empty.txt').write_text('')
    result = run(args(workdir, 'plain.yml', vault_password_file=str(workdir / 'empty.txt')))
    assert result.get('failed') and result['msg'].startswith('vault_password_file: cannot read a vault password from'), result
    assert not os.path.exists(str(workdir / 'inventory'))


@pytest.mark.parametrize('content, message', [
    ('apps:\n  - name: web\n    script: a.js\n  - name: api\n    script: b.js\n    instances: many\n',
     'app api: instances: expected a whole number or max'),
    ('apps:\n  - name: web\n    script: a.js\n    env_production: [PORT=1]\n', 'app web: env_production must be an object'),
    ('apps:\n  - name: web\n', 'app web: script is missing'),
    ('apps: []\n', 'apps: the list is empty'),
    ('apps:\n  - name: web\n    script: a.js\n    log_file_max_size: lots\n', 'app web: log_file_max_size: expected a size'),
])
def test_bad_content_fails_naming_the_app_and_writes_nothing(workdir, content, message):
    src = workdir / 'ecosystem.yml'
    src.write_text(content)
    result = run(dict(src=str(src), dest=str(workdir / 'inventory')))
    assert result.get('failed') and result['msg'].startswith(message) and 'apps[' not in result['msg'], result
    assert not os.path.exists(str(workdir / 'inventory'))


def test_an_output_path_in_the_way_fails_before_anything_is_written(workdir):
    (workdir / 'inventory' / 'group_vars' / 'all').mkdir(parents=True)
    (workdir / 'inventory' / 'group_vars' / 'all' / 'pm2_apps.yml').mkdir()
    result = run(args(workdir, 'plain.yml'))
    assert result.get('failed') and result['msg'].startswith('dest: ') and 'pm2_apps.yml is not a regular file' in result['msg'], result
    assert sorted(read_tree(str(workdir / 'inventory'))) == []


def test_a_failed_write_leaves_nothing_behind(workdir, monkeypatch):
    """All files are written to temporary files first: a failure on the last one removes the others."""
    import tempfile
    real = tempfile.mkstemp
    calls = []

    def failing(*a, **kw):
        calls.append(kw.get('dir'))
        if len(calls) == 3:
            raise OSError(28, 'No space left on device', kw.get('dir'))
        return real(*a, **kw)

    monkeypatch.setattr(tempfile, 'mkstemp', failing)
    result = run(args(workdir, 'plain.yml'))
    assert result.get('failed') and 'No space left on device; nothing was written' in result['msg'], result
    assert len(calls) == 3 and not os.path.exists(str(workdir / 'inventory'))
