# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import pwd

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import (
    MARKER_ENV_DIGEST,
    MARKER_ENV_FILE,
    MARKER_RELEASE,
    MARKER_SPEC,
    Pm2Error,
    Pm2Runner,
    SpecError,
    ecosystem_app,
    env_digest,
    extract_json_array,
    format_fingerprint,
    normalise_app,
    parse_duration_ms,
    parse_jlist,
    parse_memory,
    read_fingerprint,
    resolve_instances,
    validate_name,
)

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


# ----------------------------------------------------------------- parser

def test_parse_real_jlist_groups_by_name_and_drops_modules():
    apps = parse_jlist(fixture('jlist_mixed.json'))
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


def test_parse_keeps_only_marker_env_values():
    apps = parse_jlist(fixture('jlist_mixed.json'))
    assert apps['web']['markers'][MARKER_RELEASE] == '/tmp/apps/hello'
    assert apps['web']['markers'][MARKER_ENV_DIGEST] == 'abc123'
    assert apps['api']['markers'][MARKER_SPEC] is None
    text = json.dumps(apps)
    assert 'dummy' not in text  # scrubbed shell env values in the fixture never survive parsing
    assert '"FOO"' not in text


def test_parse_banner_before_json():
    banner = fixture('jlist_cold_banner.txt')
    assert parse_jlist(banner) == {}
    apps = parse_jlist(banner.replace('\n[]', '\n' + fixture('jlist_mixed.json')))
    assert len(apps['big']['instances']) == 4


def test_parse_duplicate_name_is_conflict():
    apps = parse_jlist(fixture('jlist_duplicate_name.json'))
    assert apps['dup']['conflict'] is True


@pytest.mark.parametrize('text', ['', 'Spawning PM2 daemon\n', '[PM2] not json [x'])
def test_extract_json_array_errors(text):
    with pytest.raises(Pm2Error):
        extract_json_array(text)


# ----------------------------------------------------------------- value parsers

@pytest.mark.parametrize('value, expected', [
    (1, 1), ('3', 3), ('max', 4), ('MAX', 4), (-1, 3), ('-3', 1), (-10, 1), (None, 1),
])
def test_resolve_instances(value, expected):
    assert resolve_instances(value, 4) == expected


@pytest.mark.parametrize('value', [0, '0', 'abc', True, '1.5'])
def test_resolve_instances_invalid(value):
    with pytest.raises(SpecError) as exc:
        resolve_instances(value, 4)
    assert exc.value.field == 'instances'


@pytest.mark.parametrize('value, expected', [
    ('200M', 209715200), ('1G', 1073741824), ('300K', 307200), ('512m', 536870912), (1000, 1000), ('500MB', 524288000), ('1024', 1024),
])
def test_parse_memory(value, expected):
    assert parse_memory(value) == expected


@pytest.mark.parametrize('value', ['12Q', '', 'M', -5, 0, True])
def test_parse_memory_invalid(value):
    with pytest.raises(SpecError) as exc:
        parse_memory(value)
    assert exc.value.field == 'max_memory_restart'


@pytest.mark.parametrize('value, expected', [('10s', 10000), ('500ms', 500), ('1m', 60000), (2500, 2500), ('1500', 1500), ('1.5s', 1500)])
def test_parse_duration(value, expected):
    assert parse_duration_ms('min_uptime', value) == expected


@pytest.mark.parametrize('value', ['10 parsecs', '-1', -1, True])
def test_parse_duration_invalid(value):
    with pytest.raises(SpecError):
        parse_duration_ms('min_uptime', value)


@pytest.mark.parametrize('name', ['api', 'api-gateway', 'a.b-2', '0api', 'x' * 100])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize('name', ['', '0', '123', 'all', '-x', 'Api', 'a_b', 'a b', 'a;b', 'x' * 101, '.x', None])
def test_invalid_names(name):
    with pytest.raises(SpecError) as exc:
        validate_name(name)
    assert exc.value.field == 'name'


# ----------------------------------------------------------------- normaliser

@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / 'server.js').write_text('//')
    (tmp_path / 'app.env').write_text('SECRET=1\n')
    return tmp_path


def spec_for(app_dir, **params):
    base = dict(name='web', script=str(app_dir / 'server.js'), cwd=str(app_dir))
    base.update(params)
    return normalise_app(base, 4)


def test_normalise_defaults(app_dir):
    spec = spec_for(app_dir)
    assert spec['managed'] is True
    assert spec['state'] == 'started'
    assert spec['instances'] == 1
    assert spec['pm2']['exec_mode'] == 'fork'
    assert spec['settle_time'] == 3000  # longer than a crash 2 s after start
    assert spec['ready_timeout'] == 60
    assert spec['release'] == os.path.realpath(str(app_dir))


def test_normalise_conversions(app_dir):
    spec = spec_for(app_dir, script='server.js', instances='max', exec_mode='cluster', max_memory_restart='1G',
                    min_uptime='10s', out_file='logs/out.log', env={'PORT': 3000, 'DEBUG': False})
    assert spec['pm2']['script'] == str(app_dir / 'server.js')
    assert spec['pm2']['max_memory_restart'] == 1073741824
    assert spec['pm2']['min_uptime'] == 10000
    assert spec['pm2']['out_file'] == str(app_dir / 'logs' / 'out.log')
    assert spec['instances'] == 4
    assert spec['settle_time'] == 10000
    assert spec['env'] == {'PORT': '3000', 'DEBUG': 'false'}


def test_release_follows_symlink(app_dir, tmp_path_factory):
    link = tmp_path_factory.mktemp('rel') / 'current'
    os.symlink(str(app_dir), str(link))
    spec = normalise_app(dict(name='web', script=str(link / 'server.js'), cwd=str(link)), 4)
    assert spec['pm2']['script'] == str(link / 'server.js')  # PM2 keeps the symlink path
    assert spec['release'] == os.path.realpath(str(app_dir))


@pytest.mark.parametrize('params, field', [
    (dict(instances=0), 'instances'),
    (dict(instances='abc'), 'instances'),
    (dict(env={'1BAD': 'x'}), 'env'),
    (dict(env={'A-B': 'x'}), 'env'),
    (dict(env={'NODEFLEET_SPEC': 'x'}), 'env'),
    (dict(env={'A': {'nested': 1}}), 'env'),
    (dict(env_file='/nonexistent/app.env'), 'env_file'),
    (dict(env_file='app.env', interpreter='python3'), 'env_file'),
    (dict(exec_mode='cluster', interpreter='python3'), 'interpreter'),
    (dict(exec_mode='both'), 'exec_mode'),
    (dict(state='running'), 'state'),
    (dict(script='/nonexistent/server.js'), 'script'),
    (dict(cwd='relative/dir'), 'cwd'),
    (dict(cwd='/nonexistent-dir'), 'cwd'),
    (dict(max_memory_restart='lots'), 'max_memory_restart'),
    (dict(min_uptime='soon'), 'min_uptime'),
    (dict(kill_timeout=-1), 'kill_timeout'),
    (dict(watch='yes'), 'watch'),
    (dict(args=['ok', 1]), 'args'),
    (dict(namespace='web'), 'namespace'),
    (dict(name='all'), 'name'),
])
def test_normalise_errors_name_the_field(app_dir, params, field):
    with pytest.raises(SpecError) as exc:
        spec_for(app_dir, **params)
    assert exc.value.field == field
    assert str(exc.value).startswith(field + ':')


def test_relative_log_without_cwd_is_an_error(app_dir):
    with pytest.raises(SpecError) as exc:
        normalise_app(dict(name='web', script=str(app_dir / 'server.js'), out_file='out.log'), 4)
    assert exc.value.field == 'out_file'


def test_absent_does_not_check_files():
    spec = normalise_app(dict(name='web', script='/gone/server.js', state='absent'), 4)
    assert spec['state'] == 'absent'


def test_name_only_form():
    spec = normalise_app(dict(name='web', state='restarted', exec_mode='fork'), 4)
    assert spec['managed'] is False
    with pytest.raises(SpecError) as exc:
        normalise_app(dict(name='web', state='restarted', env={'A': '1'}), 4)
    assert exc.value.field == 'env'


def test_fingerprint_roundtrip_and_no_env_file_content(app_dir):
    spec = spec_for(app_dir, env={'A': '1'}, env_file='app.env', args=['--x'])
    text = format_fingerprint(spec['fingerprint'])
    assert read_fingerprint(text) == spec['fingerprint']
    assert 'env.A' in spec['fingerprint']
    assert 'SECRET' not in text


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

class DummyModule(object):
    def __init__(self, outputs=None, bins=None):
        self.calls = []
        self.outputs = list(outputs or [])
        self.bins = bins if bins is not None else {'pm2': '/opt/node/bin/pm2', 'env': '/usr/bin/env', 'runuser': '/usr/sbin/runuser'}

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return self.bins.get(name)

    def run_command(self, args, cwd=None):
        self.calls.append(args)
        return self.outputs.pop(0) if self.outputs else (0, '[]', '')


def test_runner_uses_clean_env_and_argv():
    module = DummyModule(outputs=[(0, fixture('jlist_cold_banner.txt'), '')])
    runner = Pm2Runner(module, pm2_home='/srv/pm2')
    assert runner.jlist() == {}
    argv = module.calls[0]
    assert argv[:2] == ['/usr/bin/env', '-i']
    assert 'PM2_HOME=/srv/pm2' in argv and 'PM2_DISCRETE_MODE=true' in argv and 'LANG=C' in argv
    assert argv[argv.index('/opt/node/bin/pm2') + 1:] == ['jlist']
    assert [a for a in argv if a.startswith('PATH=')][0].startswith('PATH=/opt/node/bin:')
    assert runner.calls == 1


def test_runner_default_home_is_users():
    runner = Pm2Runner(DummyModule())
    assert runner.pm2_home == os.path.join(pwd.getpwuid(os.geteuid()).pw_dir, '.pm2')
    assert runner.switch_user is False


def test_runner_errors():
    # A host with only systemd apps may have no PM2: the runner says so when a pm2 command is really needed.
    runner = Pm2Runner(DummyModule(bins={'env': '/usr/bin/env'}))
    assert runner.jlist(spawn=False) == {}
    with pytest.raises(SpecError) as exc:
        runner.run('jlist')
    assert exc.value.field == 'executable'
    with pytest.raises(SpecError) as exc:
        Pm2Runner(DummyModule(), executable='/nonexistent/pm2')
    assert exc.value.field == 'executable'
    with pytest.raises(SpecError) as exc:
        Pm2Runner(DummyModule(), user='no-such-user-nodefleet')
    assert exc.value.field == 'user'


def test_runner_nonzero_rc_raises():
    runner = Pm2Runner(DummyModule(outputs=[(1, '', '[PM2][ERROR] Process or Namespace nope not found')]))
    with pytest.raises(Pm2Error) as exc:
        runner.run('reload', 'nope')
    assert 'not found' in str(exc.value)


@pytest.mark.skipif(os.geteuid() != 0, reason='needs root')
def test_runner_switches_user_as_root():
    other = [p for p in pwd.getpwall() if p.pw_uid != 0][0]
    module = DummyModule()
    runner = Pm2Runner(module, user=other.pw_name)
    runner.run('jlist')
    assert module.calls[0][:4] == ['/usr/sbin/runuser', '-u', other.pw_name, '--']
    assert 'HOME=%s' % other.pw_dir in module.calls[0]
