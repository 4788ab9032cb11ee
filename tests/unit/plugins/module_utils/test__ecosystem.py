# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import jinja2
import pytest
import yaml

from ansible_collections.nodefleet.pm2.plugins.module_utils import _ecosystem as eco
from ansible_collections.nodefleet.pm2.plugins.module_utils import _import_env as envmap
from ansible_collections.nodefleet.pm2.plugins.module_utils import _import_logs as logs
from ansible_collections.nodefleet.pm2.plugins.module_utils import _import_options as import_options
from ansible_collections.nodefleet.pm2.plugins.module_utils import _import_plan as mapping
from ansible_collections.nodefleet.pm2.plugins.module_utils import _import_render as render
from ansible_collections.nodefleet.pm2.plugins.module_utils import _import_secrets as secrets
from ansible_collections.nodefleet.pm2.plugins.module_utils import _import_values as values
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import NAME_RE, name_problem
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import MAX_INSTANCES

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'ecosystems')
SEEDS = sorted(f for f in os.listdir(FIXTURES) if '.ecosystem.config.' in f)
HAS_NODE = shutil.which('node') is not None
needs_node = pytest.mark.skipif(not HAS_NODE, reason='node is not installed')


def fixture(name):
    return os.path.join(FIXTURES, name)


def esign_key():
    # The seed's synthetic RSA key, read from the file itself (not repeated here).
    with open(fixture('crm-backend.ecosystem.config.js')) as handle:
        line = [l for l in handle if l.startswith('const ESIGN_PRIVATE_KEY')][0]
    return line.split("'")[1]


# ---------------------------------------------------------------------------------------------------------------
# Secret detection

@pytest.mark.parametrize('name, value, reason', [
    ('ESIGN_PRIVATE_KEY', 'x', 'name'),
    ('JWT_SECRET', 'x', 'name'),
    ('GITHUB_TOKEN', 'x', 'name'),
    ('DB_PASSWORD', 'x', 'name'),
    ('SMTP_PASSWD', 'x', 'name'),
    ('STRIPE_API_KEY', 'x', 'name'),
    ('apiKey', 'x', 'name'),
    ('GOOGLE_CREDENTIALS', 'x', 'name'),
    ('AWS_ACCESS_KEY_ID', 'x', 'name'),
    ('REDIS_PASS', 'x', 'name'),
    ('DATABASE_URL', 'postgres://app:s3cr3t@db/app', 'url-password'),
    ('CERT', '-----BEGIN CERTIFICATE-----', 'name'),
    ('SIGNER', '-----BEGIN RSA PRIVATE KEY-----\nMII...', 'pem'),
    ('UPSTREAM_ID', 'Zx8fQ2r7LmN4pK9sVb3TwY6hJc1dEa5G', 'entropy'),
    ('BUILD_SHA', '3f2a9c0d1e8b7a6f5e4d3c2b1a0f9e8d7c6b5a49', 'entropy'),
])
def test_secret_detected(name, value, reason):
    assert secrets.looks_secret(name, value) == reason


@pytest.mark.parametrize('name, value', [
    ('NODE_ENV', 'production'),
    ('PORT', 3000),
    ('PORT', '3000'),
    ('ESIGN_APP_ID', '141496759'),
    ('ESIGN_HOST', 'https://prev.asign.cn'),
    ('TRON_RPC_URL', 'https://api.trongrid.io'),
    ('DB_PATH', '/var/lib/point-tron/data/point-tron.db'),
    ('VITE_API_BASE_URL', 'http://localhost:3001/api'),
    ('LOG_LEVEL', 'info'),
    ('MONKEY_BUSINESS', 'yes'),
    ('REQUEST_ID_HEADER', 'x-request-id'),
    ('LOG_DIR', '/var/log/point-tron/some/long/path/segment'),
    ('GREETING', 'a sentence with many different words in it'),
    ('UUID_LIKE', '123e4567-e89b-12d3'),
])
def test_not_secret(name, value):
    assert secrets.looks_secret(name, value) is None


def test_secret_lists_override_detection():
    assert secrets.looks_secret('CACHE_KEY_PREFIX', 'app:', plain_names=['cache_key_prefix']) is None
    assert secrets.looks_secret('LICENSE', 'abc', secret_names=['LICENSE']) == 'listed'


def test_redact_text_hides_secret_words():
    key = esign_key()
    text = secrets.redact_text('Unexpected token near %s in file' % key[:60])
    assert key[:60] not in text and '<redacted>' in text and text.startswith('Unexpected token near')


# ---------------------------------------------------------------------------------------------------------------
# Normalisation

@pytest.mark.parametrize('name, expected', [
    ('track_flow-prod', 'track-flow-prod'),
    ('API Gateway', 'api-gateway'),
    ('Worker_1', 'worker-1'),
    ('42', 'app-42'),
    ('all', 'app-all'),
    ('-x-', 'x'),
    ('backend-prod', 'backend-prod'),
    ('evil.json', 'evil-json'),
    ('job.config.js', 'job-config-js'),
    ('Worker.JS', 'worker-js'),
    ('api.v2', 'api.v2'),
])
def test_normalise_app_name(name, expected):
    assert mapping.normalise_app_name(name) == expected
    assert NAME_RE.match(expected) and name_problem(expected) is None


def test_group_and_vault_names():
    assert mapping.group_name('production') == 'production'
    assert mapping.group_name('Pre-Prod') == 'pre_prod'
    assert mapping.group_name('2024') == 'env_2024'
    assert envmap.vault_var('backend-prod', 'ESIGN_PRIVATE_KEY') == 'vault_backend_prod_esign_private_key'


@pytest.mark.parametrize('field, value, expected', [
    ('exec_mode', 'cluster_mode', 'cluster'),
    ('instances', 'max', 'max'),
    ('instances', '4', 4),
    ('instances', -1, -1),
    ('kill_timeout', '5000', 5000),
    ('wait_ready', 'true', True),
    ('args', 'run dev -- --port 5173 --host', ['run', 'dev', '--', '--port', '5173', '--host']),
    ('args', ['a', 1], ['a', '1']),
    ('watch', 'dist', ['dist']),
    ('watch', False, False),
    ('max_memory_restart', '300M', '300M'),
    ('min_uptime', '10s', '10s'),
])
def test_convert(field, value, expected):
    assert values.convert(field, value) == expected


@pytest.mark.parametrize('field, value', [
    ('exec_mode', 'thread'),
    ('instances', True),
    ('kill_timeout', '5s'),
    ('wait_ready', 'maybe'),
    ('script', {values.UNSUPPORTED_MARK: 'function'}),
])
def test_convert_refuses(field, value):
    with pytest.raises(ValueError):
        values.convert(field, value)


# ---------------------------------------------------------------------------------------------------------------
# Mapping

def test_mapping_keeps_pm2_app_fields_and_reports_the_rest():
    config = {'apps': [{
        'name': 'api', 'script': 'dist/main.js', 'cwd': './backend/api', 'instances': 4, 'exec_mode': 'cluster',
        'wait_ready': True, 'listen_timeout': 10000, 'error_file': './logs/e.log', 'treekill': False,
        'log_file_max_size': '100MB', 'env_file': '.env', 'exec_interpreter': 'node',
        'env': {'PORT': 3000}, 'env_production': {'NODE_ENV': 'production'},
    }], 'deploy': {}}
    plan = mapping.plan_import(config, source='t.js')
    (app,) = plan['deploy_apps']
    assert app['name'] == 'api' and app['script'] == 'backend/api/dist/main.js'
    assert app['exec_mode'] == 'cluster' and app['instances'] == 4 and app['env_file'] is True
    assert app['pm2'] == {'cwd': '{{ pm2_deploy_to }}/current/backend/api', 'wait_ready': True, 'listen_timeout': 10000,
                          'error_file': './logs/e.log', 'interpreter': 'node'}
    assert app['health'] == {'port': 3000, 'path': '/health'}
    keys = {(u['app'], u['key']) for u in plan['unmapped']}
    assert keys == {(None, 'deploy'), ('api', 'treekill'), ('api', 'env_file')}
    # log_file_max_size is pm2_logrotate's size; the error log (relative to cwd) is in the release, per process
    # (cluster without merge_logs), and the out log is PM2's default.
    (rotation,) = plan['logrotate']
    assert rotation == {'name': 'api', 'user': '{{ pm2_deploy_user }}', 'size': '100M', 'paths': [
        '/home/{{ pm2_deploy_user }}/.pm2/logs/api-out.log', '/home/{{ pm2_deploy_user }}/.pm2/logs/api-out-[0-9]*.log',
        logs.DEPLOY_TO + '/current/backend/api/logs/e-[0-9]*.log']}
    assert plan['groups']['all']['api']['vars'] == {'PORT': 3000}
    assert plan['groups']['production']['api']['vars'] == {'PORT': 3000, 'NODE_ENV': 'production'}
    # every supported key maps to a pm2_app option
    assert set(app['pm2']) <= set(mapping.SUPPORTED)


def test_every_group_lists_every_app():
    config = {'apps': [
        {'name': 'a', 'script': 'a.js', 'env': {'X': '1'}, 'env_production': {'X': '2'}},
        {'name': 'b', 'script': 'b.js', 'env': {'Y': '1'}, 'env_staging': {'Y': '3'}},
    ]}
    plan = mapping.plan_import(config)
    assert sorted(plan['groups']) == ['all', 'production', 'staging']
    for group in plan['groups'].values():
        assert sorted(group) == ['a', 'b']
    assert plan['groups']['production']['b']['vars'] == {'Y': '1'}
    assert plan['groups']['staging']['b']['vars'] == {'Y': '3'}


def test_duplicate_names_after_normalisation_refused():
    with pytest.raises(eco.EcosystemError, match='both map'):
        mapping.plan_import({'apps': [{'name': 'a_b', 'script': 'x.js'}, {'name': 'a-b', 'script': 'y.js'}]})


def test_cwd_outside_project_refused():
    with pytest.raises(eco.EcosystemError, match='leaves the project'):
        mapping.plan_import({'apps': [{'name': 'a', 'script': 'x.js', 'cwd': '../elsewhere'}]})


def test_non_node_interpreter_gets_env_not_env_file():
    plan = mapping.plan_import({'apps': [{'name': 'dev', 'script': 'src/app.ts', 'interpreter': 'ts-node', 'env': {'PORT': 1}}]})
    app = plan['deploy_apps'][0]
    assert 'env_file' not in app and 'pm2_env_apps' in app['env']


def test_health_option_wins():
    plan = mapping.plan_import({'apps': [{'name': 'a', 'script': 'x.js'}]}, health={'command': 'curl -fs localhost:1/ok'})
    assert plan['deploy_apps'][0]['health'] == {'command': 'curl -fs localhost:1/ok'}
    plan = mapping.plan_import({'apps': [{'name': 'a', 'script': 'x.js'}]})
    assert plan['deploy_apps'][0]['health'] == {'command': 'true'}


def test_secret_in_one_block_is_secret_everywhere_and_per_group_values():
    config = {'apps': [{'name': 'a', 'script': 'x.js', 'env': {'TOKEN': 'one'}, 'env_production': {'TOKEN': 'two'},
                        'env_staging': {'OTHER': 'x'}}]}
    plan = mapping.plan_import(config)
    assert plan['vault'] == {'all': {'vault_a_token': 'one'}, 'production': {'vault_a_token': 'two'}}
    for group in ('all', 'production', 'staging'):
        assert plan['groups'][group]['a']['secrets'] == {'TOKEN': 'vault_a_token'}
        assert 'TOKEN' not in plan['groups'][group]['a']['vars']


# ---------------------------------------------------------------------------------------------------------------
# Loading and the seed files

def test_json_and_yaml_load_without_node():
    plan = mapping.plan_import(eco.load_ecosystem(fixture('plain.json')))
    app = plan['deploy_apps'][0]
    assert app['exec_mode'] == 'cluster' and app['instances'] == 2
    assert app['pm2']['node_args'] == ['--max-old-space-size=512', '--enable-source-maps'] and app['pm2']['kill_timeout'] == 5000
    moved = {(s['key'], s['reason']) for s in plan['secrets']}
    assert moved == {('DATABASE_URL', 'url-password'), ('SESSION_SALT_VALUE', 'name'), ('SENTRY_DSN_VALUE', 'name'), ('UPSTREAM_ID', 'entropy')}
    assert {u['key'] for u in plan['unmapped']} == {'deploy', 'filter_env'}
    plan = mapping.plan_import(eco.load_ecosystem(fixture('plain.yml')))
    assert plan['renamed'] == [{'from': 'Worker_1', 'to': 'worker-1'}]
    assert plan['deploy_apps'][0]['pm2']['args'] == ['--queue', 'default']
    assert [s['key'] for s in plan['secrets']] == ['SIGNING_KEY']


def test_bad_json_and_yaml_errors_quote_nothing(tmp_path):
    bad = tmp_path / 'e.json'
    bad.write_text('{"apps": [{"env": {"TOKEN": "Zx8fQ2r7LmN4pK9sVb3TwY6hJc1dEa5G"}}, ]}')
    with pytest.raises(eco.EcosystemError) as err:
        eco.load_ecosystem(str(bad))
    assert 'Zx8fQ2' not in str(err.value)
    bad = tmp_path / 'e.yml'
    bad.write_text('apps:\n  - env: {TOKEN: Zx8fQ2r7LmN4pK9sVb3TwY6hJc1dEa5G\n')
    with pytest.raises(eco.EcosystemError) as err:
        eco.load_ecosystem(str(bad))
    assert 'Zx8fQ2' not in str(err.value) and 'line' in str(err.value)


def test_unknown_extension_refused(tmp_path):
    path = tmp_path / 'ecosystem.config.ts'
    path.write_text('export default {}')
    with pytest.raises(eco.EcosystemError, match='unknown ecosystem file type'):
        eco.load_ecosystem(str(path))


EXPECTED = {
    # seed: (apps, groups, secrets moved (app.KEY), unmapped (app.key), renamed)
    'cloudphone.ecosystem.config.production.js': (
        ['api-gateway', 'user-service', 'device-service', 'app-service', 'billing-service', 'notification-service'],
        ['all', 'production'], [], [], []),
    'crm-backend.ecosystem.config.js': (
        ['backend-dev', 'backend-prod'], ['all', 'development', 'production'],
        ['backend-dev.ESIGN_PRIVATE_KEY', 'backend-prod.ESIGN_PRIVATE_KEY'], ['backend-dev.env_file', 'backend-prod.env_file'], []),
    'crm-frontend.ecosystem.config.mjs': (['frontend-prod'], ['all', 'production'], [], [], []),
    'crm-root.ecosystem.config.js': (
        ['backend-prod', 'backend-dev', 'frontend-prod', 'frontend-dev'], ['all'], [],
        ['backend-prod.env_file', 'backend-dev.env_file'], []),
    'point-tron.ecosystem.config.js': (['point-tron'], ['all', 'production'], [], [], []),
    'trackflow.ecosystem.config.js': (
        ['track-flow-prod', 'trackflow-dev'], ['all'], [], [], [{'from': 'track_flow-prod', 'to': 'track-flow-prod'}]),
}


def test_every_seed_has_an_expectation():
    assert sorted(EXPECTED) == SEEDS


@needs_node
@pytest.mark.parametrize('seed', SEEDS)
def test_seed_with_real_node(seed):
    apps, groups, secrets, unmapped, renamed = EXPECTED[seed]
    plan = mapping.plan_import(eco.load_ecosystem(fixture(seed)), source=seed)
    assert [a['name'] for a in plan['deploy_apps']] == apps
    assert sorted(plan['groups']) == groups
    assert ['%s.%s' % (s['app'], s['key']) for s in plan['secrets']] == secrets
    assert ['%s.%s' % (u['app'], u['key']) for u in plan['unmapped']] == unmapped
    assert plan['renamed'] == renamed
    for app in plan['deploy_apps']:
        assert NAME_RE.match(app['name']) and app['script'] and app['health']
        assert set(app.get('pm2', {})) <= set(mapping.SUPPORTED)
    # The written files hold no secret value outside the files to encrypt, and parse as YAML.
    values = render.secret_values(plan)
    for rel, (text, encrypt) in render.output_files(plan).items():
        assert yaml.safe_load(text) is not None
        if not encrypt:
            for value in values:
                assert value not in text, rel


@needs_node
def test_crm_backend_key_moved_to_vault_only():
    plan = mapping.plan_import(eco.load_ecosystem(fixture('crm-backend.ecosystem.config.js')))
    key = esign_key()
    assert plan['vault'] == {'all': {'vault_backend_dev_esign_private_key': key, 'vault_backend_prod_esign_private_key': key}}
    for group in plan['groups'].values():
        for entry in group.values():
            assert entry['secrets'] == {'ESIGN_PRIVATE_KEY': envmap.vault_var(entry['name'], 'ESIGN_PRIVATE_KEY')}
            assert 'ESIGN_PRIVATE_KEY' not in entry['vars'] and entry['vars']['ESIGN_APP_ID'] == '141496759'
    files = render.output_files(plan)
    assert sorted(files) == ['group_vars/all/pm2_apps.yml', 'group_vars/all/pm2_secrets.yml', 'group_vars/development/pm2_apps.yml',
                             'group_vars/production/pm2_apps.yml', 'hosts.yml']
    head = files['group_vars/all/pm2_apps.yml'][0]
    assert '#   - backend-dev.env_file = ".env": not a PM2 option' in head
    assert '#   - backend-prod.ESIGN_PRIVATE_KEY -> vault_backend_prod_esign_private_key' in head
    assert key[:30] not in head


@needs_node
def test_esm_in_a_js_file():
    mjs = eco.load_ecosystem(fixture('crm-frontend.ecosystem.config.mjs'))
    assert eco.load_ecosystem(fixture('esm-export-default.config.js')) == mjs
    assert mjs['apps'][0]['name'] == 'frontend-prod'


@needs_node
def test_evaluation_is_sandboxed():
    config = eco.load_ecosystem(fixture('hostile.config.js'))
    tries = ('fs_write', 'fs_write_tmp', 'fs_read_etc', 'child_process', 'net', 'http', 'https', 'dns', 'fetch', 'eval')
    assert config['tries'] == {k: 'blocked' for k in tries}
    assert not os.path.exists(fixture('hostile-was-here.txt'))
    env = config['apps'][0]['env']
    assert env['CWD'].startswith(os.path.join(os.path.realpath(os.environ.get('TMPDIR', '/tmp')), 'nodefleet-pm2-import-'))
    assert not os.path.exists(env['CWD'])  # removed afterwards
    assert env['SEEN_ENV'] == 'HOME,LANG,NODE_OPTIONS,PATH'
    assert eco.load_ecosystem(fixture('hostile.config.js'), environ={'PORT': '1'})['apps'][0]['env']['SEEN_ENV'] == \
        'HOME,LANG,NODE_OPTIONS,PATH,PORT'


@needs_node
def test_evaluation_timeout():
    with pytest.raises(eco.EcosystemError, match='timeout'):
        eco.load_ecosystem(fixture('slow.config.js'), timeout=1)


@needs_node
def test_syntax_error_does_not_quote_the_source():
    with pytest.raises(eco.EcosystemError) as err:
        eco.load_ecosystem(fixture('broken.config.js'))
    assert 'SyntaxError' in str(err.value)
    assert 'Q2hhbmdl' not in str(err.value)


def test_missing_node_is_reported(tmp_path):
    with pytest.raises(eco.EcosystemError, match='not found'):
        eco.load_ecosystem(fixture('trackflow.ecosystem.config.js'), node='no-such-node-binary')


# ---------------------------------------------------------------------------------------------------------------
# PM2's implicit decisions, written out (pm2_app always gives an exec mode and an instance count). Each case was
# checked against `pm2 start` of pm2 7.0.4; molecule/import_roundtrip compares them on the fleet.

@pytest.mark.parametrize('app, exec_mode, instances, merge_logs', [
    ({'script': 'x.js'}, 'fork', 1, True),
    ({'script': 'x.js', 'instances': 1}, 'cluster', 1, None),
    ({'script': 'x.js', 'instances': 2}, 'cluster', 2, None),
    ({'script': 'x.js', 'instances': 'max'}, 'cluster', 'max', True),
    ({'script': 'x.js', 'instances': 0}, 'cluster', 'max', True),
    ({'script': 'x.js', 'instances': '2'}, 'cluster', 2, None),
    ({'script': 'x.js', 'exec_mode': 'fork'}, 'fork', 1, True),
    ({'script': 'x.js', 'exec_mode': 'fork', 'instances': 1}, 'fork', 1, None),
    ({'script': 'x.js', 'exec_mode': 'fork', 'instances': 'max'}, 'fork', 'max', True),
    ({'script': 'x.js', 'exec_mode': 'cluster'}, 'cluster', 1, None),
    ({'script': 'x.js', 'exec_mode': 'cluster', 'instances': 'max'}, 'cluster', 'max', None),
    ({'script': 'x.js', 'exec_mode': 'cluster', 'instances': 0}, 'cluster', 'max', None),
    ({'script': 'x.js', 'exec_mode': 'cluster_mode', 'instances': -1}, 'cluster', -1, None),
    ({'script': 'x.mjs', 'instances': 2}, 'cluster', 2, None),
    ({'script': 'x.py', 'instances': 2}, 'fork', 2, None),
    ({'script': 'x.py', 'interpreter': '/usr/bin/node', 'instances': 2}, 'cluster', 2, None),
    ({'script': 'x.js', 'interpreter': 'python3', 'instances': 2}, 'fork', 2, None),
    ({'script': 'x.js', 'merge_logs': False}, 'fork', 1, False),
    ({'script': 'x.js', 'combine_logs': False}, 'fork', 1, False),
    ({'script': 'npm', 'args': 'start', 'instances': 2}, 'fork', 2, None),
])
def test_pm2_defaults_are_written_out(app, exec_mode, instances, merge_logs):
    plan = mapping.plan_import({'apps': [dict(app, name='a')]})
    item = plan['deploy_apps'][0]
    assert (item['exec_mode'], item['instances'], item.get('pm2', {}).get('merge_logs')) == (exec_mode, instances, merge_logs)
    assert list(item)[:4] == ['name', 'script', 'exec_mode', 'instances']


def test_pm2_defaults_are_noted():
    plan = mapping.plan_import({'apps': [
        {'name': 'c', 'script': 'x.js', 'instances': 2},
        {'name': 'f', 'script': 'x.js'},
        {'name': 'z', 'script': 'x.js', 'exec_mode': 'cluster', 'instances': 0},
        {'name': 't', 'script': 'x.ts', 'interpreter': 'ts-node', 'instances': 2},
        {'name': 'b', 'script': 'server', 'instances': 2},
    ]})
    notes = '\n'.join(plan['notes'])
    assert 'c: no exec_mode: cluster mode' in notes
    assert 'f: merge_logs: true written out' in notes
    assert 'z: instances 0 (one process per CPU) imported as max' in notes
    assert 't: cluster mode runs Node.js, not the ts-node interpreter' in notes
    assert 'b: no exec_mode: imported as fork; PM2 would pick cluster mode if server is a Node.js file' in notes
    assert [a['exec_mode'] for a in plan['deploy_apps']] == ['cluster', 'fork', 'cluster', 'cluster', 'fork']


# ---------------------------------------------------------------------------------------------------------------
# Values as ansible-core 2.19 hands them over: module arguments are tagged subclasses of str, int, dict, ...

class _Str(str):
    pass


class _Int(int):
    pass


class _Dict(dict):
    pass


def test_rendering_takes_subclasses_of_the_builtin_types():
    text = render.to_yaml({'user': _Str('app'), 'health': _Dict(port=_Int(3000), path=_Str('/ready')), 'list': [_Str('a')]})
    assert yaml.safe_load(text) == {'user': 'app', 'health': {'port': 3000, 'path': '/ready'}, 'list': ['a']}
    assert '!!' not in text


def test_output_files_with_tagged_arguments():
    config = {'apps': [{'name': 'a', 'script': 'x.js', 'env': {'PORT': 1, 'API_TOKEN': 'x'}}]}
    plan = mapping.plan_import(config, health=_Dict(port=_Int(1)), secret_names=[_Str('OTHER')], source=_Str('e.config.js'))
    files = render.output_files(plan, user=_Str('app'))
    data = yaml.safe_load(files['group_vars/all/pm2_apps.yml'][0])
    assert data['pm2_deploy_user'] == 'app' and data['pm2_deploy_apps'][0]['health'] == {'port': 1}
    assert yaml.safe_load(files['group_vars/all/pm2_secrets.yml'][0]) == {'vault_a_api_token': 'x'}


# ---------------------------------------------------------------------------------------------------------------
# The sandbox against hostile files (issue 15): symlinks out of the directory, signals, endless output, output at
# load time, more data than the result may hold.

OUTSIDE_SECRET = 'NODEFLEET-OUTSIDE-SECRET-4c1d9e'


def symlink_project(root):
    """A project whose directory has symlinks leading outside it (see fixtures/ecosystems/symlink-escape.config.js)."""
    project, outside = root / 'project', root / 'outside'
    for directory in (project / 'lib', project / 'node_modules', outside / 'pkg'):
        directory.mkdir(parents=True)
    shutil.copy(fixture('symlink-escape.config.js'), str(project))
    (outside / 'secret.txt').write_text(OUTSIDE_SECRET + '\n')
    (outside / 'secret.json').write_text('{"s": "%s"}' % OUTSIDE_SECRET)
    (outside / 'secret.mjs').write_text('export default "%s";\n' % OUTSIDE_SECRET)
    (outside / 'pkg' / 'package.json').write_text('{"name": "outside-pkg", "main": "index.js"}')
    (outside / 'pkg' / 'index.js').write_text('module.exports = { s: "%s" };\n' % OUTSIDE_SECRET)
    (project / 'inside.txt').write_text('inside value\n')
    os.symlink('inside.txt', str(project / 'inside-link.txt'))
    for link, target in (('link.txt', 'secret.txt'), ('link.json', 'secret.json'), ('link.mjs', 'secret.mjs')):
        os.symlink('../outside/' + target, str(project / link))
    os.symlink('../outside', str(project / 'linkdir'))
    os.symlink('/etc/hostname', str(project / 'hostname'))
    os.symlink('../../outside/secret.txt', str(project / 'lib' / 'deep-link.txt'))
    (project / 'lib' / 'reader.js').write_text("module.exports = () => require('fs').readFileSync(__dirname + '/deep-link.txt', 'utf8');\n")
    (project / 'lib' / 'esm-reader.mjs').write_text(
        "import { readFileSync } from 'node:fs';\n"
        "export default () => readFileSync(new URL('./deep-link.txt', import.meta.url), 'utf8');\n")
    (project / 'lib' / 'esm-promises-reader.mjs').write_text(
        "import { readFile } from 'node:fs/promises';\n"
        "export default () => readFile(new URL('./deep-link.txt', import.meta.url), 'utf8');\n")
    os.symlink('../../outside/pkg', str(project / 'node_modules' / 'outside-pkg'))
    return project / 'symlink-escape.config.js'


@needs_node
def test_symlinks_do_not_lead_out_of_the_directory(tmp_path):
    notes = []
    config = eco.load_ecosystem(str(symlink_project(tmp_path)), notes=notes)
    tries = config.pop('tries')
    assert tries.pop('inside_link') == 'read'  # a link that stays inside works
    assert config['apps'][0]['env'] == {'READ_INSIDE_LINK': 'inside value'}
    assert len(tries) == 24 and tries == {k: 'blocked' for k in tries}, tries
    assert OUTSIDE_SECRET not in json.dumps(config) and OUTSIDE_SECRET not in json.dumps(notes)
    refused = '\n'.join(notes)
    for link in ('link.txt', 'link.json', 'link.mjs', 'linkdir', 'hostname', 'lib/deep-link.txt', 'node_modules/outside-pkg/index.js'):
        assert '%s, which is outside its directory' % (tmp_path / 'project' / link) in refused, link


@needs_node
def test_a_link_to_a_file_outside_read_by_the_file_itself_fails_clearly(tmp_path):
    (tmp_path / 'outside.json').write_text('{"apps": [{"name": "x", "script": "x.js", "env": {"S": "%s"}}]}' % OUTSIDE_SECRET)
    (tmp_path / 'project').mkdir()
    os.symlink('../outside.json', str(tmp_path / 'project' / 'apps.json'))
    (tmp_path / 'project' / 'ecosystem.config.js').write_text(
        "module.exports = JSON.parse(require('fs').readFileSync(__dirname + '/apps.json', 'utf8'));\n")
    with pytest.raises(eco.EcosystemError) as err:
        eco.load_ecosystem(str(tmp_path / 'project' / 'ecosystem.config.js'))
    message = str(err.value)
    assert 'apps.json refused: it is outside the directory of the ecosystem file' in message
    assert OUTSIDE_SECRET not in message


SIGNALS_HARNESS = r'''
import json, sys
sys.path[:0] = json.loads(sys.argv[1])
from ansible_collections.nodefleet.pm2.plugins.module_utils import _ecosystem as eco
config = eco.load_ecosystem(sys.argv[2], environ={'VICTIM_PID': sys.argv[3]})
print(json.dumps(config['tries']))
'''


@needs_node
def test_signals_are_blocked(tmp_path):
    """The file tries to kill its parent (here a Python process standing in for the Ansible worker), process groups
    and another process: all refused, and both processes live on. Both run in sessions of their own, so that a
    regression kills them and not the test run."""
    victim = subprocess.Popen(['sleep', '300'], start_new_session=True)
    try:
        proc = subprocess.run([sys.executable, '-c', SIGNALS_HARNESS, json.dumps(sys.path), fixture('signals.config.js'), str(victim.pid)],
                              capture_output=True, text=True, timeout=60, check=False, start_new_session=True)
        assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
        tries = json.loads(proc.stdout)
        assert len(tries) == 9 and tries == {k: 'blocked' for k in tries}, tries
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


@needs_node
def test_printing_at_load_time_does_not_break_the_import():
    notes = []
    config = eco.load_ecosystem(fixture('prints.config.js'), notes=notes)
    assert config == {'apps': [{'name': 'chatty', 'script': 'server.js', 'env': {'PORT': 3000}}]}
    assert notes == [
        'prints.config.js printed 80 bytes on stdout while it was evaluated (ignored and not shown: it may hold secrets; the import '
        'read the exported object only)',
        'prints.config.js printed 21 bytes on stderr while it was evaluated (ignored and not shown: it may hold secrets; the import '
        'read the exported object only)']
    plan = mapping.plan_import(config, notes=notes)
    assert plan['notes'][:2] == notes and [a['name'] for a in plan['deploy_apps']] == ['chatty']


@needs_node
def test_a_quiet_file_has_no_output_note():
    notes = []
    eco.load_ecosystem(fixture('trackflow.ecosystem.config.js'), notes=notes)
    assert notes == []


FLOOD_HARNESS = r'''
import json, resource, sys
sys.path[:0] = json.loads(sys.argv[1])
from ansible_collections.nodefleet.pm2.plugins.module_utils import _ecosystem as eco
try:
    eco.load_ecosystem(sys.argv[2], environ={'FLOOD_MODE': sys.argv[3]}, timeout=60)
    error = None
except eco.EcosystemError as exc:
    error = str(exc)
print(json.dumps({'error': error, 'peak_kb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
'''


@needs_node
@pytest.mark.parametrize('mode', ['console', 'console-error', 'stdout'])
def test_endless_output_is_cut_at_the_cap_while_it_is_produced(mode):
    """Measured in a fresh Python process (the one that would be the Ansible worker): its peak RSS stays near its
    size at start. Before the output was read as it came, the same file took it to 1.5 GB (console.log) and 4.5 GB
    (fs.writeSync) within a 10 s timeout."""
    proc = subprocess.run([sys.executable, '-c', FLOOD_HARNESS, json.dumps(sys.path), fixture('flood.config.js'), mode],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert 'printed more than %d bytes while it was evaluated (stopped)' % eco.MAX_PRINTED in result['error']
    assert result['peak_kb'] < 150 * 1024, result


@needs_node
def test_a_result_larger_than_the_cap_is_refused():
    with pytest.raises(eco.EcosystemError, match='is larger than %d bytes' % eco.MAX_OUTPUT):
        eco.load_ecosystem(fixture('huge.config.js'))


@needs_node
def test_shared_structures_are_not_expanded():
    with pytest.raises(eco.EcosystemError, match='the exported object is too large'):
        eco.load_ecosystem(fixture('laughs.config.js'))


def test_yaml_alias_bomb_is_neither_expanded_nor_imported(tmp_path):
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        levels.append('a%d: &a%d [%s]' % (i, i, ', '.join(['*a%d' % (i - 1)] * 10)))
    bomb = tmp_path / 'ecosystem.yml'
    bomb.write_text('\n'.join(['x:'] + ['  ' + line for line in levels]) + '\napps:\n  - name: bomb\n    script: x.js\n    args: *a9\n')
    with pytest.raises(eco.EcosystemError, match='app bomb: args: expected a list of strings'):
        mapping.plan_import(eco.load_ecosystem(str(bomb)))
    bomb.write_text(bomb.read_text().replace('    args: *a9\n', '    env:\n      BOMB: *a9\n'))
    with pytest.raises(eco.EcosystemError, match=r'app bomb: env\.BOMB must be a string, number or boolean \(got a list\)'):
        mapping.plan_import(eco.load_ecosystem(str(bomb)))
    bomb.write_text(bomb.read_text().replace('    env:\n      BOMB: *a9\n', '    treekill: *a9\n'))
    plan = mapping.plan_import(eco.load_ecosystem(str(bomb)))  # an unmapped key: reported without its value
    assert [(u['app'], u['key'], 'value' in u) for u in plan['unmapped']] == [(None, 'x', False), ('bomb', 'treekill', False)]


def test_node_older_than_20_is_refused(tmp_path):
    old = tmp_path / 'node'
    old.write_text('#!/bin/sh\necho v18.19.1\n')
    old.chmod(0o755)
    with pytest.raises(eco.EcosystemError, match=r'node_executable: .* is Node\.js 18; evaluating a JavaScript ecosystem file needs '
                                                 r'Node\.js 20 or later'):
        eco.load_ecosystem(fixture('trackflow.ecosystem.config.js'), node=str(old))


# ---------------------------------------------------------------------------------------------------------------
# Bad ecosystem content: an error naming the app (by name) and the field

@pytest.mark.parametrize('config, message', [
    ('just a string', 'the ecosystem file must export an object with an "apps" list (got a string)'),
    ({'apps': 'web'}, 'apps: the ecosystem file defines no "apps" list (got a string)'),
    ({'apps': []}, 'apps: the list is empty; the ecosystem file defines no app'),
    ({'apps': [{'name': 'a', 'script': 'a.js'}, 'b']}, 'apps: the 2nd entry is not an app object (got a string)'),
    ({'apps': [{'name': ['x'], 'script': 'a.js'}]}, 'the app with script a.js (no name): name must be a string (got a list)'),
    ({'apps': [{'env': {}}]}, 'the 1st app (no name): has neither name nor script'),
    ({'apps': [{'name': 'web'}]}, 'app web: script is missing'),
    ({'apps': [{'name': 'web', 'script': {'__nodefleet_unsupported__': 'function'}}]}, 'app web: script: a function, not data'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'instances': 'lots'}]}, 'app web: instances: expected a whole number or max (got a string)'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'instances': 2.5}]}, 'app web: instances: expected a whole number or max'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'instances': 1000000}]}, 'app web: instances: more than %d processes' % MAX_INSTANCES),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'exec_mode': 'thread'}]}, 'app web: exec_mode: expected fork or cluster'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'kill_timeout': '5s'}]}, 'app web: kill_timeout: expected an integer'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'wait_ready': 'maybe'}]}, 'app web: wait_ready: expected a boolean'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'supervisor': 'runit'}]}, 'app web: supervisor: expected one of pm2, systemd'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'args': {'a': 1}}]}, 'app web: args: expected a list of strings or a string'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'out_file': ['x']}]}, 'app web: out_file: expected a string (got a list)'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'env': 'PORT=1'}]}, 'app web: env must be an object of environment variables'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'env_production': {'X': None}}]},
     'app web: env_production.X must be a string, number or boolean (got null)'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'env_prod': {}, 'env_PROD': {}}]},
     'app web: env_prod and env_PROD both map to the inventory group prod; rename one'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'env_all': {}}]}, 'app web: an env block named env_all would clash'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'cwd': '../other'}]}, 'app web: cwd ../other leaves the project directory'),
    ({'apps': [{'name': 'web', 'script': '../other/a.js'}]}, 'app web: script ../other/a.js leaves the project directory'),
    ({'apps': [{'name': 'a_b', 'script': 'x.js'}, {'name': 'a-b', 'script': 'y.js'}]},
     'apps a_b and a-b both map to the app name a-b; rename one'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'log_file_max_size': 'huge'}]},
     'app web: log_file_max_size: expected a size: a number with an optional K, M or G'),
    ({'apps': [{'name': 'web', 'script': 'a.js', 'log_file_max_files': -1}]},
     'app web: log_file_max_files: expected a whole number of files to keep'),
])
def test_bad_content_is_refused_naming_the_app_and_field(config, message):
    with pytest.raises(eco.EcosystemError) as err:
        mapping.plan_import(config)
    assert str(err.value).startswith(message) and 'apps[' not in str(err.value)


def test_bad_values_are_not_quoted():
    with pytest.raises(eco.EcosystemError) as err:
        mapping.plan_import({'apps': [{'name': 'web', 'script': 'a.js', 'instances': 'Zx8fQ2r7LmN4pK9sVb3TwY6hJc1dEa5G'}]})
    assert 'Zx8fQ2' not in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# What pm2_runtime and pm2_logrotate need (issue 11)

def rendered(text, **variables):
    """An imported value as Ansible renders it (Jinja with the given variables)."""
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(text).render(**variables)


def logrotate_of(app, **fields):
    plan = mapping.plan_import({'apps': [dict(app, name=app.get('name', 'web'))]})
    return plan['logrotate'][0] if plan['logrotate'] else None


@pytest.mark.parametrize('app, paths', [
    # PM2's default files only: the role knows them (no paths).
    ({'script': 'a.js'}, None),
    # relative to the release root, under logs/: the shared directory; merged (fork, no instances): the file itself.
    ({'script': 'a.js', 'out_file': 'logs/out.log', 'error_file': './logs/err.log'},
     ['$DEPLOY/shared/logs/out.log', '$DEPLOY/shared/logs/err.log']),
    # relative to a cwd: resolved against it, like pm2_app does.
    ({'script': 'a.js', 'cwd': 'backend', 'out_file': '../logs/out.log', 'error_file': '../logs/out.log'}, ['$DEPLOY/shared/logs/out.log']),
    # cluster without merge_logs: PM2 writes -<pm_id> before .log (x-3.log replaces -3 too).
    ({'script': 'a.js', 'instances': 2, 'out_file': 'logs/out.log', 'error_file': 'logs/err-1.log'},
     ['$DEPLOY/shared/logs/out-[0-9]*.log', '$DEPLOY/shared/logs/err-[0-9]*.log']),
    ({'script': 'a.js', 'instances': 2, 'merge_logs': True, 'out_file': 'logs/out.log', 'error_file': 'logs/err.txt'},
     ['$DEPLOY/shared/logs/out.log', '$DEPLOY/shared/logs/err.txt']),
    # inside the release but not a shared directory; absolute; a combined log.
    ({'script': 'a.js', 'cwd': 'api', 'out_file': 'logs/out.log', 'error_file': '/var/log/web/err.log', 'log_file': 'logs/all.log'},
     ['$DEPLOY/current/api/logs/out.log', '/var/log/web/err.log', '$DEPLOY/current/api/logs/all.log']),
    # one given, one PM2's default (named with the user's PM2_HOME); no log at all (NULL is PM2's /dev/null); only
    # PM2's default error log left: the role's defaults.
    ({'script': 'a.js', 'out_file': 'logs/out.log'}, ['$PM2/web-error.log', '$DEPLOY/shared/logs/out.log']),
    ({'script': 'a.js', 'out_file': 'NULL', 'error_file': 'logs/err.log'}, ['$DEPLOY/shared/logs/err.log']),
    ({'script': 'a.js', 'out_file': '/dev/null'}, None),
])
def test_logs_are_rotated_where_pm2_writes_them_under_the_deploy_layout(app, paths):
    entry = logrotate_of(app)
    assert entry['name'] == 'web' and entry['user'] == '{{ pm2_deploy_user }}'
    expected = None if paths is None else [p.replace('$DEPLOY', logs.DEPLOY_TO).replace('$PM2', logs.PM2_LOG_DIR) for p in paths]
    assert entry.get('paths') == expected


def test_log_paths_render_to_the_deploy_directory():
    entry = logrotate_of({'script': 'a.js', 'out_file': 'logs/out.log', 'error_file': 'logs/err.log'})
    assert [rendered(p, pm2_deploy_user='app', pm2_deploy_project='crm') for p in entry['paths']] == \
        ['/srv/crm/shared/logs/out.log', '/srv/crm/shared/logs/err.log']
    assert rendered(entry['paths'][0], pm2_deploy_user='app', pm2_deploy_to='/opt/crm') == '/opt/crm/shared/logs/out.log'
    assert rendered(entry['paths'][0], pm2_deploy_user='app') == '/srv/app/shared/logs/out.log'  # pm2_deploy's defaults
    entry = logrotate_of({'script': 'a.js', 'out_file': 'logs/out.log'})
    assert rendered(entry['paths'][0], pm2_deploy_user='web') == '/home/web/.pm2/logs/web-error.log'


def test_a_log_file_of_two_apps_is_rotated_once():
    plan = mapping.plan_import({'apps': [{'name': 'a', 'script': 'a.js', 'out_file': 'logs/all.log', 'error_file': 'logs/all.log'},
                                         {'name': 'b', 'script': 'b.js', 'out_file': 'logs/all.log', 'error_file': 'logs/all.log'}]})
    assert [entry['name'] for entry in plan['logrotate']] == ['a']
    assert 'b: log file %s/shared/logs/all.log is also the log of a: rotated with that app' % logs.DEPLOY_TO in plan['notes']


@pytest.mark.parametrize('size, files, expected', [
    ('100MB', 10, {'size': '100M', 'rotate': 10}),
    ('10M', '5', {'size': '10M', 'rotate': 5}),
    ('512kb', None, {'size': '512k'}),
    ('1G', None, {'size': '1G'}),
    (1048576, None, {'size': '1048576'}),
    (None, 3, {'rotate': 3}),
])
def test_log_rotation_keys_become_logrotate_settings(size, files, expected):
    app = {'script': 'a.js'}
    if size is not None:
        app['log_file_max_size'] = size
    if files is not None:
        app['log_file_max_files'] = files
    entry = logrotate_of(app)
    assert {k: entry[k] for k in ('size', 'rotate') if k in entry} == expected


@needs_node
def test_point_tron_log_rotation_is_imported():
    plan = mapping.plan_import(eco.load_ecosystem(fixture('point-tron.ecosystem.config.js')))
    assert plan['logrotate'] == [{'name': 'point-tron', 'user': '{{ pm2_deploy_user }}', 'size': '100M', 'rotate': 10,
                                  'paths': ['/var/log/point-tron/out.log', '/var/log/point-tron/error.log']}]
    assert 'point-tron: log_file_max_size and log_file_max_files imported into pm2_logrotate_apps (size: 100M, rotate: 10); ' \
           'PM2 itself ignores these keys' in plan['notes']


def test_the_user_file_names_pm2_runtime_users_and_logrotate():
    plan = mapping.plan_import({'apps': [{'name': 'web', 'script': 'a.js', 'out_file': 'logs/out.log'}]})
    data = yaml.safe_load(render.output_files(plan, user='deploy')['group_vars/all/pm2_apps.yml'][0])
    assert list(data) == ['pm2_deploy_user', 'pm2_runtime_users', 'pm2_deploy_apps', 'pm2_env_apps', 'pm2_logrotate_apps']
    assert data['pm2_deploy_user'] == 'deploy'
    assert data['pm2_runtime_users'] == [{'name': '{{ pm2_deploy_user }}'}]
    assert data['pm2_logrotate_apps'] == plan['logrotate']


# ---------------------------------------------------------------------------------------------------------------
# Bad options: an error naming the option

def options(tmp_path, **extra):
    (tmp_path / 'vault-pass.txt').write_text('x\n')
    base = dict(src=fixture('plain.json'), dest=str(tmp_path / 'inventory'), vault_password_file=str(tmp_path / 'vault-pass.txt'),
                vault_id='default', force=False, user='app', health=None, secret_names=[], plain_names=[], node_executable='node',
                timeout=10, environment={})
    base.update(extra)
    return base


@pytest.mark.parametrize('extra, message', [
    (dict(src='/nonexistent/ecosystem.config.js'), 'src: /nonexistent/ecosystem.config.js does not exist'),
    (dict(src=FIXTURES), 'src: .* is not a file'),
    (dict(src=os.path.join(FIXTURES, '..', '..', 'test__ecosystem.py')), "src: .*: unknown ecosystem file type '.py'"),
    (dict(dest=fixture('plain.json')), 'dest: .*plain.json is not a directory'),
    (dict(dest=os.path.join(fixture('plain.json'), 'inventory')), 'dest: .*plain.json is not a directory'),
    (dict(vault_password_file='/nonexistent/pass'), 'vault_password_file: /nonexistent/pass does not exist'),
    (dict(vault_password_file=FIXTURES), 'vault_password_file: .* is not a file'),
    (dict(vault_id='a;b'), 'vault_id: must be a non-empty label'),
    (dict(user='Web App'), "user: 'Web App' is not a user name nodefleet.pm2.pm2_runtime can create"),
    (dict(user='root'), 'user: root is refused'),
    (dict(health={'port': 70000}), 'health.port: must be a port number from 1 to 65535'),
    (dict(health={'port': 80, 'path': 'ready'}), 'health.path: must start with /'),
    (dict(health={'prot': 80}), 'health: unknown key prot'),
    (dict(health={'path': '/ready'}), 'health: needs port'),
    (dict(health={'command': 'true', 'port': 1}), 'health: give command or an HTTP check'),
    (dict(health={'url': 'ftp://x'}), 'health.url: must be an http'),
    (dict(health={'port': 1, 'retries': -1}), 'health.retries: must be a whole number'),
    (dict(secret_names=['MY KEY']), "secret_names: 'MY KEY' is not an environment variable name"),
    (dict(secret_names=['TOKEN'], plain_names=['token']), 'secret_names and plain_names: both list TOKEN'),
    (dict(node_executable=' '), 'node_executable: must name the node binary'),
    (dict(timeout=0), 'timeout: must be from 1 to 600 seconds'),
    (dict(environment={'NODE_OPTIONS': '--allow-fs-read=*'}), r'environment\.NODE_OPTIONS: refused'),
    (dict(environment={'A-B': '1'}), "environment: 'A-B' is not an environment variable name"),
    (dict(environment={'X': {'a': 1}}), r'environment\.X: must be a string, number or boolean \(got an object\)'),
])
def test_bad_options_are_refused_naming_the_option(tmp_path, extra, message):
    with pytest.raises(eco.EcosystemError, match=message):
        import_options.check_options(options(tmp_path, **extra))


def test_options_are_normalised(tmp_path):
    checked = import_options.check_options(options(tmp_path, health={'port': '3000', 'path': '/ready'}, environment={'A': 1, 'B': True, 'NODE_ENV': 'x'}))
    assert checked['health'] == {'port': 3000, 'path': '/ready'}
    assert checked['environment'] == {'A': '1', 'B': 'true', 'NODE_ENV': 'x'}


@needs_node
def test_process_exit_at_load_time_is_a_clear_error(tmp_path):
    src = tmp_path / 'ecosystem.config.js'
    src.write_text("if (!process.env.DB_URL) { console.error('DB_URL missing'); process.exit(1); }\n"
                   "module.exports = { apps: [{ name: 'db', script: 'db.js' }] };\n")
    with pytest.raises(eco.EcosystemError, match=r'Error: the ecosystem file called process\.exit\(1\)'):
        eco.load_ecosystem(str(src))
    assert eco.load_ecosystem(str(src), environ={'DB_URL': 'x'}) == {'apps': [{'name': 'db', 'script': 'db.js'}]}


@needs_node
def test_files_may_wrap_fs_functions_as_graceful_fs_does(tmp_path):
    src = tmp_path / 'ecosystem.config.js'
    src.write_text("'use strict';\nconst fs = require('fs');\nconst close = fs.close;\n"
                   "fs.close = function (fd, cb) { return close.call(this, fd, cb); };\n"
                   "module.exports = { apps: [{ name: 'web', script: 'web.js' }] };\n")
    assert eco.load_ecosystem(str(src)) == {'apps': [{'name': 'web', 'script': 'web.js'}]}
