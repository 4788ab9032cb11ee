# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import ENV_PRELOAD_JS, SpecError, normalise_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd import (
    check_systemd_spec,
    instance_state,
    parse_show,
    parse_unit,
    plan_systemd_app,
    render_unit,
    restart_policy,
)


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / 'server.js').write_text('//')
    (tmp_path / 'app.env').write_text('SECRET=1\n')
    return tmp_path


def params_for(app_dir, **params):
    base = dict(name='web', supervisor='systemd', script=str(app_dir / 'server.js'), cwd=str(app_dir))
    base.update(params)
    return base


def spec_for(app_dir, **params):
    params = params_for(app_dir, **params)
    spec = normalise_app(params, 4)
    check_systemd_spec(spec, params)
    return spec


def unit_for(spec, user='app'):
    return render_unit(spec, user, user, '/usr/bin/node', spec['pm2']['script'])


def lines(text):
    return text.splitlines()


# ----------------------------------------------------------------- validation

@pytest.mark.parametrize('field, value', [
    ('exec_mode', 'cluster'),
    ('watch', True),
    ('watch', ['src']),
    ('ignore_watch', ['node_modules']),
    ('watch_delay', 100),
    ('cron_restart', '0 3 * * *'),
    ('exp_backoff_restart_delay', 100),
    ('namespace', 'shop'),
])
def test_pm2_only_options_are_refused_naming_the_field(app_dir, field, value):
    with pytest.raises(SpecError) as err:
        spec_for(app_dir, **{field: value})
    assert err.value.field == field


def test_pm2_formatting_options_are_accepted_and_reported_as_ignored(app_dir):
    params = params_for(app_dir, wait_ready=True, listen_timeout=8000, log_date_format='YYYY', merge_logs=True, time=False)
    spec = normalise_app(params, 4)
    assert check_systemd_spec(spec, params) == ['wait_ready', 'listen_timeout', 'log_date_format', 'merge_logs']


def test_env_file_needs_no_node_interpreter_under_systemd(app_dir):
    spec = spec_for(app_dir, interpreter='/usr/bin/python3', env_file=str(app_dir / 'app.env'))
    assert spec['env_file'] == str(app_dir / 'app.env')


# ----------------------------------------------------------------- rendering

def test_unit_runs_the_script_as_the_user_with_instance_id_and_hardening(app_dir):
    text = unit_for(spec_for(app_dir))
    assert 'User=app' in lines(text) and 'Group=app' in lines(text)
    assert 'WorkingDirectory=%s' % app_dir in lines(text)
    assert 'Environment=NODE_APP_INSTANCE=%i' in lines(text)
    assert 'ExecStart="/usr/bin/node" "%s/server.js"' % app_dir in lines(text)
    for option in ('NoNewPrivileges=yes', 'PrivateTmp=yes', 'ProtectSystem=full', 'Type=exec'):
        assert option in lines(text)
    assert 'MemoryDenyWriteExecute' not in text
    assert 'WantedBy=multi-user.target' in lines(text)


def test_restart_policy_defaults_are_pm2s(app_dir):
    unit, service = restart_policy(spec_for(app_dir)['pm2'])
    # PM2: 16 restarts within min_uptime 1 s each stop the app; RestartSec 100 ms (PM2's restart_delay 0).
    assert unit == ['StartLimitBurst=17', 'StartLimitIntervalSec=18700ms']
    assert service == ['Restart=always', 'RestartSec=100ms', 'KillSignal=SIGINT', 'KillMode=mixed', 'TimeoutStopSec=1600ms']


def test_restart_policy_maps_every_pm2_field(app_dir):
    spec = spec_for(app_dir, autorestart=False, restart_delay=500, max_restarts=5, min_uptime='2s',
                    max_memory_restart='200M', kill_timeout=3000)
    unit, service = restart_policy(spec['pm2'])
    assert unit == ['StartLimitBurst=6', 'StartLimitIntervalSec=15000ms']
    assert service == ['Restart=no', 'RestartSec=500ms', 'KillSignal=SIGINT', 'KillMode=mixed', 'TimeoutStopSec=3000ms',
                       'MemoryMax=209715200']


def test_env_values_are_quoted_for_systemd_and_the_env_file_is_only_named(app_dir):
    spec = spec_for(app_dir, env={'GREETING': 'two words "quoted" 100% \\ done', 'PORT': 3000},
                    env_file=str(app_dir / 'app.env'))
    text = unit_for(spec)
    assert 'Environment="GREETING=two words \\"quoted\\" 100%% \\\\ done"' in lines(text)
    assert 'Environment="PORT=3000"' in lines(text)
    assert 'EnvironmentFile=%s/app.env' % app_dir in lines(text)
    assert 'SECRET' not in text


def test_exec_start_quotes_specifiers_and_variables(app_dir):
    spec = spec_for(app_dir, args=['--name', '%h $HOME'], node_args=['--max-old-space-size=512'])
    text = unit_for(spec)
    expected = 'ExecStart="/usr/bin/node" "--max-old-space-size=512" "' + str(app_dir) + '/server.js" "--name" "%%h $$HOME"'
    assert expected in lines(text)


def test_binary_without_interpreter(app_dir):
    spec = spec_for(app_dir)
    text = render_unit(spec, 'app', 'app', None, '/usr/bin/npm')
    assert 'ExecStart="/usr/bin/npm"' in lines(text)


def test_logs_go_to_the_journal_or_to_files(app_dir):
    assert {'StandardOutput=journal', 'StandardError=journal'} <= set(lines(unit_for(spec_for(app_dir))))
    text = unit_for(spec_for(app_dir, out_file='/var/log/web/out.log', error_file='/var/log/web/err.log'))
    assert {'StandardOutput=append:/var/log/web/out.log', 'StandardError=append:/var/log/web/err.log'} <= set(lines(text))
    text = unit_for(spec_for(app_dir, log_file='/var/log/web/all.log'))
    assert {'StandardOutput=append:/var/log/web/all.log', 'StandardError=append:/var/log/web/all.log'} <= set(lines(text))


def test_unit_records_what_it_was_rendered_from(app_dir):
    spec = spec_for(app_dir, env={'PORT': 3000}, error_file='/var/log/web/err.log')
    found = parse_unit(unit_for(spec))
    assert found['fingerprint'] == spec['fingerprint']
    assert found['user'] == 'app'
    assert found['script'] == str(app_dir / 'server.js')
    assert found['cwd'] == str(app_dir)
    assert found['err_log'] == '/var/log/web/err.log'


def test_rendering_is_stable(app_dir):
    assert unit_for(spec_for(app_dir, env={'B': 1, 'A': 2})) == unit_for(spec_for(app_dir, env={'A': 2, 'B': 1}))


# ----------------------------------------------------------------- systemctl show parser

SHOW = """Id=nodefleet-web@0.service
ActiveState=active
SubState=running
MainPID=4242
NRestarts=0
ExecMainStartTimestamp=@1763848000
MemoryCurrent=52428800
LoadState=loaded

Id=nodefleet-web@1.service
ActiveState=activating
SubState=auto-restart
MainPID=0
NRestarts=3
ExecMainStartTimestamp=
MemoryCurrent=[not set]
LoadState=loaded
"""


def test_parse_show_and_map_states():
    units = parse_show(SHOW)
    assert sorted(units) == ['nodefleet-web@0.service', 'nodefleet-web@1.service']
    first = instance_state(0, units['nodefleet-web@0.service'], True, '/srv/web/releases/v1')
    assert first == {'pm_id': 0, 'pid': 4242, 'status': 'online', 'restart_time': 0, 'pm_uptime': 1763848000000,
                     'memory': 52428800, 'cpu': 0, 'err_log': None, 'enabled': True, 'release': '/srv/web/releases/v1'}
    second = instance_state(1, units['nodefleet-web@1.service'], False)
    assert (second['status'], second['restart_time'], second['pid'], second['memory']) == ('waiting restart', 3, 0, 0)


@pytest.mark.parametrize('active, sub, status', [
    ('failed', 'failed', 'errored'),
    ('inactive', 'dead', 'stopped'),
    ('activating', 'start', 'launching'),
    ('deactivating', 'stop-sigterm', 'stopping'),
])
def test_state_mapping(active, sub, status):
    assert instance_state(0, {'ActiveState': active, 'SubState': sub}, False)['status'] == status


# ----------------------------------------------------------------- planner

def live(spec, text, instances=((0, 'online', True),), release=None, env_digest=None):
    release = release or spec['release']
    return {
        'name': spec['name'], 'unit': text, 'fingerprint': parse_unit(text)['fingerprint'] if text else {},
        'env_digest': env_digest,
        'instances': [dict(pm_id=i, status=s, enabled=e, release=release if s == 'online' else None, pid=100 + i,
                           restart_time=0) for i, s, e in instances],
    }


def plan(spec, actual, text=None, digest=None, in_pm2=False):
    result = plan_systemd_app(spec, actual, text if text is not None else unit_for(spec), digest, in_pm2)
    return result['actions'], result['reasons']


def test_missing_app_is_installed_and_started(app_dir):
    assert plan(spec_for(app_dir), None) == (['install', 'start'], ['missing'])


def test_nothing_to_do_when_unit_release_and_instances_match(app_dir):
    spec = spec_for(app_dir)
    assert plan(spec, live(spec, unit_for(spec))) == ([], [])


def test_new_release_is_a_restart_without_unit_change(app_dir):
    spec = spec_for(app_dir)
    assert plan(spec, live(spec, unit_for(spec), release='/srv/web/releases/old')) == (['restart'], ['release'])


def test_changed_env_file_content_is_a_restart(app_dir):
    spec = spec_for(app_dir, env_file=str(app_dir / 'app.env'))
    actual = live(spec, unit_for(spec), env_digest='old')
    assert plan(spec, actual, digest='new') == (['restart'], ['env_file_content'])
    actual['env_digest'] = 'new'
    assert plan(spec, actual, digest='new') == ([], [])


def test_unit_change_is_install_and_restart_naming_the_field(app_dir):
    spec = spec_for(app_dir, env={'COLOR': 'blue'})
    old = unit_for(spec_for(app_dir, env={'COLOR': 'green'}))
    assert plan(spec, live(spec, old)) == (['install', 'restart'], ['env.COLOR'])


def test_rendering_change_without_option_change_is_named_unit(app_dir):
    spec = spec_for(app_dir)
    old = unit_for(spec).replace('PrivateTmp=yes\n', '')
    assert plan(spec, live(spec, old)) == (['install', 'restart'], ['unit'])


def test_scale_up_and_down_keep_running_instances(app_dir):
    spec = spec_for(app_dir, instances=3)
    text = unit_for(spec)
    assert plan(spec, live(spec, text, [(0, 'online', True), (1, 'online', True)])) == (['scale'], ['instances'])
    spec = spec_for(app_dir, instances=1)
    assert plan(spec, live(spec, text, [(0, 'online', True), (1, 'online', True)])) == (['scale'], ['instances'])


def test_started_but_not_enabled_is_enabled(app_dir):
    spec = spec_for(app_dir)
    assert plan(spec, live(spec, unit_for(spec), [(0, 'online', False)])) == (['scale'], ['instances'])


def test_stopped_app_is_started(app_dir):
    spec = spec_for(app_dir)
    assert plan(spec, live(spec, unit_for(spec), [(0, 'stopped', False)])) == (['start'], ['status'])
    assert plan(spec, live(spec, unit_for(spec), [])) == (['start'], ['status'])


def test_stop_never_starts_and_applies_the_unit_only(app_dir):
    spec = spec_for(app_dir, state='stopped')
    assert plan(spec, live(spec, unit_for(spec))) == (['stop'], ['status'])
    assert plan(spec, live(spec, unit_for(spec), [(0, 'stopped', False)])) == ([], [])
    old = unit_for(spec_for(app_dir, kill_timeout=9))
    assert plan(spec, live(spec, old, [(0, 'stopped', False)])) == (['install'], ['kill_timeout'])
    assert plan(spec, None) == ([], [])


def test_present_installs_without_starting(app_dir):
    spec = spec_for(app_dir, state='present')
    assert plan(spec, None) == (['install'], ['missing'])
    assert plan(spec, live(spec, unit_for(spec), [])) == ([], [])


def test_restarted_and_reloaded_always_restart(app_dir):
    for state in ('restarted', 'reloaded'):
        spec = spec_for(app_dir, state=state)
        assert plan(spec, live(spec, unit_for(spec))) == (['restart'], ['requested'])


def test_absent_removes_from_both_supervisors(app_dir):
    spec = spec_for(app_dir, state='absent')
    assert plan(spec, live(spec, unit_for(spec))) == (['delete'], [])
    assert plan(spec, None, in_pm2=True) == (['delete'], [])
    assert plan(spec, None) == ([], [])


def test_switch_from_pm2_removes_it_there_first(app_dir):
    assert plan(spec_for(app_dir), None, in_pm2=True) == (['switch', 'install', 'start'], ['supervisor', 'missing'])
    assert plan(spec_for(app_dir, state='stopped'), None, in_pm2=True) == (['switch', 'install'], ['supervisor', 'missing'])


def test_name_only_acts_on_the_live_unit():
    spec = normalise_app({'name': 'web', 'state': 'restarted', 'supervisor': 'systemd'}, 4)
    actual = {'name': 'web', 'unit': 'x', 'fingerprint': {}, 'instances': [dict(pm_id=0, status='online', enabled=True)]}
    assert plan_systemd_app(spec, actual, None)['actions'] == ['restart']
    spec = normalise_app({'name': 'web', 'state': 'started', 'supervisor': 'systemd'}, 4)
    with pytest.raises(SpecError) as err:
        plan_systemd_app(spec, None, None)
    assert err.value.field == 'script'


# ----------------------------------------------------------------- one env file grammar for both supervisors

ENV_FILE = (
    'A="x$HOME \\$y `z` \\\\ \\q \\" end"\n'
    'B= unq  \\\\ab  \n'
    "C='s $q \\\\ '\n"
    'export D=1\n'
    '; comment\n'
    '# comment\n'
    'E="multi\nline"\n'
    'F=plain\n'
    'G = "sp" x \n'
    'H="a\\nb"\n'
)
# What systemd 252 (Debian 12) makes of ENV_FILE, measured with systemd-run -p EnvironmentFile= on a fleet host.
SYSTEMD_SAYS = {'A': 'x$HOME $y `z` \\ \\q " end', 'B': 'unq  \\ab', 'C': 's $q \\\\ ', 'E': 'multi\nline', 'F': 'plain',
                'G': 'spx', 'H': 'a\\nb'}


@pytest.mark.skipif(shutil.which('node') is None, reason='needs node')
def test_env_preload_reads_env_files_as_systemd_does(tmp_path):
    (tmp_path / 'app.env').write_text(ENV_FILE)
    (tmp_path / 'preload.cjs').write_text(ENV_PRELOAD_JS)
    code = 'console.log(JSON.stringify(Object.fromEntries(%s.map(k => [k, process.env[k]]).filter(e => e[1] !== undefined))))' % (
        json.dumps(sorted('ABCDEFGH')),)
    out = subprocess.run(['node', '--require', str(tmp_path / 'preload.cjs'), '-e', code], check=True, capture_output=True,
                         text=True, env={'NODEFLEET_ENV_FILE': str(tmp_path / 'app.env'), 'PATH': '/usr/bin:/bin'}).stdout
    assert json.loads(out) == SYSTEMD_SAYS
