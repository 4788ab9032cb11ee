# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later


from __future__ import annotations

import os

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import name_problem, validate_name
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import (
    format_fingerprint,
    normalise_app,
    parse_duration_ms,
    parse_memory,
    prepare_app,
    read_fingerprint,
    resolve_instances,
)


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

def spec_for(app_dir, **params):
    base = dict(name='web', script=str(app_dir / 'server.js'), cwd=str(app_dir))
    base.update(params)
    return prepare_app(base, 4)


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
    spec = prepare_app(dict(name='web', script=str(link / 'server.js'), cwd=str(link)), 4)
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
        prepare_app(dict(name='web', script=str(app_dir / 'server.js'), out_file='out.log'), 4)
    assert exc.value.field == 'out_file'


def test_absent_does_not_check_files():
    spec = prepare_app(dict(name='web', script='/gone/server.js', state='absent'), 4)
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


@pytest.mark.parametrize('name, mark', [
    ('evil.json', '.json'), ('web.json.bak', '.json'), ('a.yml', '.yml'), ('a.yaml', '.yaml'), ('job.config.js', '.config.js'),
    ('job.config.cjs', '.config.cjs'), ('x.config.mjs.old', '.config.mjs'), ('run.js', '.js'), ('run.cjs', '.cjs'), ('run.mjs', '.mjs'),
])
def test_names_pm2_reads_as_files_are_refused(name, mark):
    problem = name_problem(name)
    assert problem and mark in problem and 'file' in problem
    with pytest.raises(SpecError) as exc:
        validate_name(name)
    assert exc.value.field == 'name'


@pytest.mark.parametrize('name', ['web.jsx', 'json-api', 'api.v2', 'config.service', 'yaml-lint'])
def test_names_that_only_look_like_files_are_fine(name):
    assert name_problem(name) is None


@pytest.mark.parametrize('value, cpus', [(129, 4), ('1000000', 4), (257, 256)])
def test_instances_have_an_upper_bound(value, cpus):
    with pytest.raises(SpecError) as exc:
        resolve_instances(value, cpus)
    assert exc.value.field == 'instances' and 'limit' in str(exc.value)


def test_instances_bound_follows_a_big_host():
    assert resolve_instances(256, 256) == 256 and resolve_instances('max', 300) == 300


def test_normalisation_is_pure_and_resolution_checks_files(app_dir):
    params = dict(name='web', script='server.js', cwd=str(app_dir / 'missing'), env_file='app.env')
    spec = normalise_app(params, 4)  # no file is looked at
    assert spec['pm2']['script'] == 'server.js' and 'fingerprint' not in spec
    with pytest.raises(SpecError) as exc:
        prepare_app(params, 4)
    assert exc.value.field == 'cwd'


def test_by_name_settle_time_zero_is_kept():
    assert normalise_app(dict(name='web', state='restarted', settle_time=0), 4)['settle_time'] == 0
    assert normalise_app(dict(name='web', state='restarted'), 4)['settle_time'] == 3000


@pytest.mark.parametrize('field', ['settle_time', 'ready_timeout', 'max_restarts'])
def test_negative_integers_are_refused(app_dir, field):
    with pytest.raises(SpecError) as exc:
        spec_for(app_dir, **{field: -1})
    assert exc.value.field == field
