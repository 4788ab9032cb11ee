# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error, SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import (
    MARKER_ENV_DIGEST,
    MARKER_ENV_FILE,
    MARKER_RELEASE,
    MARKER_SPEC,
)
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_plan import plan_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import fingerprint_of, format_fingerprint, normalise_app

SCRIPT = '/srv/web/current/server.js'


def desired(**params):
    base = dict(name='web', script=SCRIPT, cwd='/srv/web/current', state='started', env={'PORT': '3000'})
    base.update(params)
    spec = normalise_app(base, 4)  # pure: the files need not exist
    del spec['release_path']
    spec['release'] = '/srv/web/releases/v1'
    spec['fingerprint'] = fingerprint_of(spec)
    return spec


def live(spec=None, count=1, status='online', mode=None, script=SCRIPT, release='/srv/web/releases/v1', digest=None, marker=True):
    spec = spec or desired()
    markers = {MARKER_SPEC: format_fingerprint(spec['fingerprint']) if marker else None, MARKER_RELEASE: release,
               MARKER_ENV_DIGEST: digest, MARKER_ENV_FILE: None}
    return dict(name='web', script=script, cwd=spec['pm2']['cwd'], exec_mode=mode or spec['pm2']['exec_mode'],
                namespace='default', markers=markers, recorded_release=release, conflict=False,
                instances=[dict(pm_id=i, pid=100 + i, status=status, restart_time=0, pm_uptime=1, release=release,
                                markers=dict(markers)) for i in range(count)])


def actions(spec, actual, digest=None):
    plan = plan_app(spec, actual, digest)
    return plan['actions'], plan['reasons']


def test_no_change():
    spec = desired()
    assert actions(spec, live(spec)) == ([], [])


@pytest.mark.parametrize('state, expected', [
    ('started', ['start']), ('present', ['start']), ('restarted', ['start']), ('reloaded', ['start']),
    ('stopped', []), ('absent', []),
])
def test_missing_app(state, expected):
    assert actions(desired(state=state), None)[0] == expected


def test_missing_app_without_script_needs_script():
    spec = normalise_app(dict(name='web', state='started'), 4)
    with pytest.raises(SpecError) as exc:
        plan_app(spec, None)
    assert exc.value.field == 'script'


@pytest.mark.parametrize('change, expected_reason', [
    (dict(env={'PORT': '3001'}), 'env.PORT'),
    (dict(env={'PORT': '3000', 'NEW': 'x'}), 'env.NEW'),
])
def test_env_change_or_addition_reloads(change, expected_reason):
    before = desired()
    after = desired(**change)
    assert actions(after, live(before)) == (['reload'], [expected_reason])


def test_env_removal_recreates():
    before = desired(env={'PORT': '3000', 'OLD': 'x'})
    assert actions(desired(), live(before)) == (['recreate'], ['env.OLD'])


def test_release_flip_reloads():
    spec = desired()
    assert actions(spec, live(spec, release='/srv/web/releases/v0')) == (['reload'], ['release'])


def test_env_file_digest_change_reloads():
    spec = desired(env_file='/srv/web/shared/app.env')
    assert actions(spec, live(spec, digest='old'), 'new') == (['reload'], ['env_file_content'])
    assert actions(spec, live(spec, digest='new'), 'new') == ([], [])
    # unknown digest (check mode before the key exists) predicts a reload
    assert actions(spec, live(spec, digest='new'), None) == (['reload'], ['env_file_content'])


def test_env_file_added_or_removed_recreates():
    with_file = desired(env_file='/srv/web/shared/app.env')
    assert actions(with_file, live(desired()), 'd')[0] == ['recreate']
    assert actions(desired(), live(with_file, digest='d'))[0] == ['recreate']


def test_env_file_path_change_reloads():
    old = desired(env_file='/srv/web/shared/a.env')
    new = desired(env_file='/srv/web/shared/b.env')
    assert actions(new, live(old, digest='d'), 'd') == (['reload'], ['env_file'])


@pytest.mark.parametrize('count, desired_instances', [(1, 3), (4, 2)])
def test_scale_only(count, desired_instances):
    spec = desired(instances=desired_instances)
    assert actions(spec, live(spec, count=count)) == (['scale'], ['instances'])


def test_reload_then_scale():
    before = desired()
    after = desired(env={'PORT': '1'}, instances=2)
    assert actions(after, live(before)) == (['reload', 'scale'], ['env.PORT', 'instances'])


@pytest.mark.parametrize('change, reason', [
    (dict(script='/srv/web/current/other.js'), 'script'),
    (dict(cwd='/srv/web/other'), 'cwd'),
    (dict(exec_mode='cluster'), 'exec_mode'),
    (dict(args=['--x']), 'args'),
    (dict(node_args=['--inspect']), 'node_args'),
    (dict(interpreter='/usr/bin/node'), 'interpreter'),
    (dict(namespace='jobs'), 'namespace'),
    (dict(out_file='/var/log/web.log'), 'out_file'),
    (dict(watch=True), 'watch'),
    (dict(max_memory_restart='1G'), 'max_memory_restart'),
])
def test_recreate_fields(change, reason):
    spec = desired(**change)
    acts, reasons = actions(spec, live(desired()))
    assert acts == ['recreate']
    assert reason in reasons


def test_recreate_subsumes_scale_and_reload():
    before = desired()
    after = desired(script='/srv/web/current/v2.js', env={'PORT': '1'}, instances=3)
    acts, reasons = actions(after, live(before))
    assert acts == ['recreate']
    assert set(reasons) >= {'script', 'env.PORT', 'instances'}


def test_live_exec_mode_drift_recreates():
    spec = desired(exec_mode='cluster', instances=2)
    assert actions(spec, live(spec, count=2, mode='fork'))[0] == ['recreate']


def test_unmanaged_app_is_recreated():
    spec = desired()
    assert actions(spec, live(spec, marker=False)) == (['recreate'], ['unmanaged'])


def test_conflict_refused():
    spec = desired()
    actual = live(spec)
    actual['conflict'] = True
    with pytest.raises(Pm2Error) as exc:
        plan_app(spec, actual)
    assert 'web' in str(exc.value)


@pytest.mark.parametrize('state, status, expected', [
    ('started', 'stopped', ['start']),
    ('started', 'errored', ['start']),
    ('present', 'stopped', []),
    ('present', 'online', []),
    ('stopped', 'online', ['stop']),
    ('stopped', 'stopped', []),
    ('restarted', 'online', ['restart']),
    ('reloaded', 'online', ['reload']),
    ('absent', 'online', ['delete']),
    ('absent', 'stopped', ['delete']),
])
def test_states_without_drift(state, status, expected):
    spec = desired(state=state)
    assert actions(spec, live(spec, status=status))[0] == expected


@pytest.mark.parametrize('state, status, expected', [
    ('started', 'stopped', ['recreate']),
    ('present', 'stopped', ['recreate', 'stop']),
    ('stopped', 'stopped', []),  # never started just to apply a change
    ('stopped', 'online', ['stop']),
    ('present', 'online', ['reload']),
    ('reloaded', 'online', ['reload']),
    ('restarted', 'online', ['restart']),
])
def test_states_with_env_drift(state, status, expected):
    spec = desired(state=state, env={'PORT': '9'})
    assert actions(spec, live(desired(), status=status))[0] == expected


def test_cluster_app_is_one_unit():
    spec = desired(exec_mode='cluster', instances=4)
    actual = live(spec, count=4)
    actual['instances'][2]['status'] = 'errored'
    assert actions(spec, actual)[0] == ['start']  # one `pm2 restart NAME`, never per instance


@pytest.mark.parametrize('state, status, expected', [
    ('started', 'online', []),
    ('started', 'stopped', ['start']),
    ('stopped', 'online', ['stop']),
    ('stopped', 'stopped', []),
    ('restarted', 'stopped', ['restart']),
    ('reloaded', 'online', ['reload']),
    ('absent', 'online', ['delete']),
])
def test_name_only(state, status, expected):
    spec = normalise_app(dict(name='web', state=state), 4)
    assert actions(spec, live(desired(), status=status))[0] == expected
