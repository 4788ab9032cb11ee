# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import shutil

import pytest
import yaml

from ansible_collections.nodefleet.pm2.plugins.module_utils import _ecosystem as eco
from ansible_collections.nodefleet.pm2.plugins.module_utils import _import_plan as mapping
from ansible_collections.nodefleet.pm2.plugins.module_utils import _import_render as render
from ansible_collections.nodefleet.pm2.plugins.module_utils import _import_secrets as secrets
from ansible_collections.nodefleet.pm2.plugins.module_utils import _import_values as values
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import NAME_RE, name_problem

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
    assert mapping.vault_var('backend-prod', 'ESIGN_PRIVATE_KEY') == 'vault_backend_prod_esign_private_key'


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
    assert keys == {(None, 'deploy'), ('api', 'treekill'), ('api', 'log_file_max_size'), ('api', 'env_file')}
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
    'point-tron.ecosystem.config.js': (
        ['point-tron'], ['all', 'production'], [], ['point-tron.log_file_max_size', 'point-tron.log_file_max_files'], []),
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
            assert entry['secrets'] == {'ESIGN_PRIVATE_KEY': mapping.vault_var(entry['name'], 'ESIGN_PRIVATE_KEY')}
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
