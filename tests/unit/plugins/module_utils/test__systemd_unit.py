# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later


from __future__ import annotations

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import normalise_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd_unit import (
    INSTANCE_RE,
    check_systemd_spec,
    parse_unit,
    render_unit,
    restart_policy,
)


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
def test_pm2_only_options_are_refused_naming_the_field(app_dir, field, value, systemd_spec):
    with pytest.raises(SpecError) as err:
        systemd_spec(app_dir, **{field: value})
    assert err.value.field == field


def test_pm2_formatting_options_are_accepted_and_reported_as_ignored(app_dir):
    params = dict(name='web', supervisor='systemd', script=str(app_dir / 'server.js'), cwd=str(app_dir), wait_ready=True,
                  listen_timeout=8000, log_date_format='YYYY', merge_logs=True, time=False)
    spec = normalise_app(params, 4)
    assert check_systemd_spec(spec, params) == ['wait_ready', 'listen_timeout', 'log_date_format', 'merge_logs']


def test_env_file_needs_no_node_interpreter_under_systemd(app_dir, systemd_spec):
    spec = systemd_spec(app_dir, interpreter='/usr/bin/python3', env_file=str(app_dir / 'app.env'))
    assert spec['env_file'] == str(app_dir / 'app.env')


# ----------------------------------------------------------------- rendering

def test_unit_runs_the_script_as_the_user_with_instance_id_and_hardening(app_dir, systemd_spec):
    text = unit_for(systemd_spec(app_dir))
    assert 'User=app' in lines(text) and 'Group=app' in lines(text)
    assert 'WorkingDirectory=%s' % app_dir in lines(text)
    assert 'Environment=NODE_APP_INSTANCE=%i' in lines(text)
    assert 'ExecStart="/usr/bin/node" "%s/server.js"' % app_dir in lines(text)
    for option in ('NoNewPrivileges=yes', 'PrivateTmp=yes', 'ProtectSystem=full', 'Type=exec'):
        assert option in lines(text)
    assert 'MemoryDenyWriteExecute' not in text
    assert 'WantedBy=multi-user.target' in lines(text)


def test_restart_policy_defaults_are_pm2s(app_dir, systemd_spec):
    unit, service = restart_policy(systemd_spec(app_dir)['pm2'])
    # PM2: 16 restarts within min_uptime 1 s each stop the app; RestartSec 100 ms (PM2's restart_delay 0).
    assert unit == ['StartLimitBurst=17', 'StartLimitIntervalSec=18700ms']
    assert service == ['Restart=always', 'RestartSec=100ms', 'KillSignal=SIGINT', 'KillMode=mixed', 'TimeoutStopSec=1600ms']


def test_restart_policy_maps_every_pm2_field(app_dir, systemd_spec):
    spec = systemd_spec(app_dir, autorestart=False, restart_delay=500, max_restarts=5, min_uptime='2s',
                        max_memory_restart='200M', kill_timeout=3000)
    unit, service = restart_policy(spec['pm2'])
    assert unit == ['StartLimitBurst=6', 'StartLimitIntervalSec=15000ms']
    assert service == ['Restart=no', 'RestartSec=500ms', 'KillSignal=SIGINT', 'KillMode=mixed', 'TimeoutStopSec=3000ms',
                       'MemoryMax=209715200']


def test_env_values_are_quoted_for_systemd_and_the_env_file_is_only_named(app_dir, systemd_spec):
    spec = systemd_spec(app_dir, env={'GREETING': 'two words "quoted" 100% \\ done', 'PORT': 3000},
                        env_file=str(app_dir / 'app.env'))
    text = unit_for(spec)
    assert 'Environment="GREETING=two words \\"quoted\\" 100%% \\\\ done"' in lines(text)
    assert 'Environment="PORT=3000"' in lines(text)
    assert 'EnvironmentFile=%s/app.env' % app_dir in lines(text)
    assert 'SECRET' not in text


def test_exec_start_quotes_specifiers_and_variables(app_dir, systemd_spec):
    spec = systemd_spec(app_dir, args=['--name', '%h $HOME'], node_args=['--max-old-space-size=512'])
    text = unit_for(spec)
    expected = 'ExecStart="/usr/bin/node" "--max-old-space-size=512" "' + str(app_dir) + '/server.js" "--name" "%%h $$HOME"'
    assert expected in lines(text)


def test_binary_without_interpreter(app_dir, systemd_spec):
    spec = systemd_spec(app_dir)
    text = render_unit(spec, 'app', 'app', None, '/usr/bin/npm')
    assert 'ExecStart="/usr/bin/npm"' in lines(text)


def test_logs_go_to_the_journal_or_to_files(app_dir, systemd_spec):
    assert {'StandardOutput=journal', 'StandardError=journal'} <= set(lines(unit_for(systemd_spec(app_dir))))
    text = unit_for(systemd_spec(app_dir, out_file='/var/log/web/out.log', error_file='/var/log/web/err.log'))
    assert {'StandardOutput=append:/var/log/web/out.log', 'StandardError=append:/var/log/web/err.log'} <= set(lines(text))
    text = unit_for(systemd_spec(app_dir, log_file='/var/log/web/all.log'))
    assert {'StandardOutput=append:/var/log/web/all.log', 'StandardError=append:/var/log/web/all.log'} <= set(lines(text))


def test_unit_records_what_it_was_rendered_from(app_dir, systemd_spec):
    spec = systemd_spec(app_dir, env={'PORT': 3000}, error_file='/var/log/web/err.log')
    found = parse_unit(unit_for(spec))
    assert found['fingerprint'] == spec['fingerprint']
    assert found['user'] == 'app'
    assert found['script'] == str(app_dir / 'server.js')
    assert found['cwd'] == str(app_dir)
    assert found['err_log'] == '/var/log/web/err.log'


def test_rendering_is_stable(app_dir, systemd_spec):
    assert unit_for(systemd_spec(app_dir, env={'B': 1, 'A': 2})) == unit_for(systemd_spec(app_dir, env={'A': 2, 'B': 1}))


def test_instance_names_follow_the_app_name_rule():
    assert INSTANCE_RE.match('nodefleet-api.v2@3.service').groups() == ('api.v2', '3')
    assert INSTANCE_RE.match('nodefleet-Api@0.service') is None
    assert INSTANCE_RE.match('other-api@0.service') is None
