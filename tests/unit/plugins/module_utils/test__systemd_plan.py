# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later


from __future__ import annotations

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import normalise_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd_plan import plan_systemd_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd_unit import parse_unit, render_unit


def unit_for(spec, user='app'):
    return render_unit(spec, user, user, '/usr/bin/node', spec['pm2']['script'])


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


def test_missing_app_is_installed_and_started(app_dir, systemd_spec):
    assert plan(systemd_spec(app_dir), None) == (['install', 'start'], ['missing'])


def test_nothing_to_do_when_unit_release_and_instances_match(app_dir, systemd_spec):
    spec = systemd_spec(app_dir)
    assert plan(spec, live(spec, unit_for(spec))) == ([], [])


def test_new_release_is_a_restart_without_unit_change(app_dir, systemd_spec):
    spec = systemd_spec(app_dir)
    assert plan(spec, live(spec, unit_for(spec), release='/srv/web/releases/old')) == (['restart'], ['release'])


def test_changed_env_file_content_is_a_restart(app_dir, systemd_spec):
    spec = systemd_spec(app_dir, env_file=str(app_dir / 'app.env'))
    actual = live(spec, unit_for(spec), env_digest='old')
    assert plan(spec, actual, digest='new') == (['restart'], ['env_file_content'])
    actual['env_digest'] = 'new'
    assert plan(spec, actual, digest='new') == ([], [])


def test_unit_change_is_install_and_restart_naming_the_field(app_dir, systemd_spec):
    spec = systemd_spec(app_dir, env={'COLOR': 'blue'})
    old = unit_for(systemd_spec(app_dir, env={'COLOR': 'green'}))
    assert plan(spec, live(spec, old)) == (['install', 'restart'], ['env.COLOR'])


def test_rendering_change_without_option_change_is_named_unit(app_dir, systemd_spec):
    spec = systemd_spec(app_dir)
    old = unit_for(spec).replace('PrivateTmp=yes\n', '')
    assert plan(spec, live(spec, old)) == (['install', 'restart'], ['unit'])


def test_scale_up_and_down_keep_running_instances(app_dir, systemd_spec):
    spec = systemd_spec(app_dir, instances=3)
    text = unit_for(spec)
    assert plan(spec, live(spec, text, [(0, 'online', True), (1, 'online', True)])) == (['scale'], ['instances'])
    spec = systemd_spec(app_dir, instances=1)
    assert plan(spec, live(spec, text, [(0, 'online', True), (1, 'online', True)])) == (['scale'], ['instances'])


def test_started_but_not_enabled_is_enabled(app_dir, systemd_spec):
    spec = systemd_spec(app_dir)
    assert plan(spec, live(spec, unit_for(spec), [(0, 'online', False)])) == (['scale'], ['instances'])


def test_stopped_app_is_started(app_dir, systemd_spec):
    spec = systemd_spec(app_dir)
    assert plan(spec, live(spec, unit_for(spec), [(0, 'stopped', False)])) == (['start'], ['status'])
    assert plan(spec, live(spec, unit_for(spec), [])) == (['start'], ['status'])


def test_stop_never_starts_and_applies_the_unit_only(app_dir, systemd_spec):
    spec = systemd_spec(app_dir, state='stopped')
    assert plan(spec, live(spec, unit_for(spec))) == (['stop'], ['status'])
    assert plan(spec, live(spec, unit_for(spec), [(0, 'stopped', False)])) == ([], [])
    old = unit_for(systemd_spec(app_dir, kill_timeout=9))
    assert plan(spec, live(spec, old, [(0, 'stopped', False)])) == (['install'], ['kill_timeout'])
    assert plan(spec, None) == ([], [])


def test_present_installs_without_starting(app_dir, systemd_spec):
    spec = systemd_spec(app_dir, state='present')
    assert plan(spec, None) == (['install'], ['missing'])
    assert plan(spec, live(spec, unit_for(spec), [])) == ([], [])


def test_restarted_and_reloaded_always_restart(app_dir, systemd_spec):
    for state in ('restarted', 'reloaded'):
        spec = systemd_spec(app_dir, state=state)
        assert plan(spec, live(spec, unit_for(spec))) == (['restart'], ['requested'])


def test_absent_removes_from_both_supervisors(app_dir, systemd_spec):
    spec = systemd_spec(app_dir, state='absent')
    assert plan(spec, live(spec, unit_for(spec))) == (['delete'], [])
    assert plan(spec, None, in_pm2=True) == (['delete'], [])
    assert plan(spec, None) == ([], [])


def test_switch_from_pm2_removes_it_there_first(app_dir, systemd_spec):
    assert plan(systemd_spec(app_dir), None, in_pm2=True) == (['switch', 'install', 'start'], ['supervisor', 'missing'])
    assert plan(systemd_spec(app_dir, state='stopped'), None, in_pm2=True) == (['switch', 'install'], ['supervisor', 'missing'])


def test_name_only_acts_on_the_live_unit():
    spec = normalise_app({'name': 'web', 'state': 'restarted', 'supervisor': 'systemd'}, 4)
    actual = {'name': 'web', 'unit': 'x', 'fingerprint': {}, 'instances': [dict(pm_id=0, status='online', enabled=True)]}
    assert plan_systemd_app(spec, actual, None)['actions'] == ['restart']
    spec = normalise_app({'name': 'web', 'state': 'started', 'supervisor': 'systemd'}, 4)
    with pytest.raises(SpecError) as err:
        plan_systemd_app(spec, None, None)
    assert err.value.field == 'script'
