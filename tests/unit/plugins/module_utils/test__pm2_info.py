# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""pm2_info against the fake host: both supervisors, restarts split into pm2_app's and the others."""

from __future__ import annotations

import os
import pwd

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils import _pm2_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._common import SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_app import run_pm2_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_info import crash_restarts, read_apps


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(_pm2_app, 'POLL_INTERVAL', 0.01)


def info(host, **params):
    base = dict(name=None, executable=None, pm2_home=host.pm2_home, user=None)
    base.update(params)
    return read_apps(host.module(), base)


def converge(host, **params):
    module = host.module(**params)
    return run_pm2_app(module, module.params, False)


def test_reloads_by_pm2_app_are_not_crash_restarts(host, app_dir):
    app = dict(name='web', script=str(app_dir / 'server.js'), cwd=str(app_dir), exec_mode='cluster', instances=2, settle_time=0)
    converge(host, apps=[app])
    converge(host, apps=[dict(app, state='reloaded')])
    web = info(host)['apps']['web']
    assert (web['restarts'], web['crash_restarts'], web['unstable_restarts']) == (2, 0, 0)
    assert [i['restarts'] for i in web['instances']] == [1, 1]
    host.pm2.named('web')[1]['restart_time'] += 3  # three crashes of one instance since the reload
    web = info(host)['apps']['web']
    assert (web['restarts'], web['crash_restarts']) == (5, 3)
    assert [i['crash_restarts'] for i in web['instances']] == [0, 3]
    assert {i['release'] for i in web['instances']} == {os.path.realpath(str(app_dir))}
    assert web['managed'] is True and web['supervisor'] == 'pm2' and web['instances_online'] == 2


def test_apps_pm2_app_never_touched_count_every_restart(host):
    host.pm2.add('legacy', restart_time=4)
    legacy = info(host)['apps']['legacy']
    assert legacy['crash_restarts'] == 4 and legacy['managed'] is False and legacy['recorded_release'] is None


def test_online_without_a_process_is_not_counted_online(host):
    host.pm2.add('ghost')
    host.pm2.pid0.add('ghost')
    ghost = info(host)['apps']['ghost']
    assert ghost['instances_online'] == 0 and ghost['instances'][0]['status'] == 'online'


def test_never_starts_a_daemon(host):
    host.pm2.set_daemon(False)
    result = info(host)
    assert result == dict(changed=False, apps={}, pm2_calls=0, systemctl_calls=0)
    assert host.pm2.commands == []


def test_name_filter_is_validated(host):
    host.pm2.add('web')
    host.pm2.add('api')
    assert list(info(host, name='api')['apps']) == ['api']
    with pytest.raises(SpecError) as err:
        info(host, name='evil.json')
    assert err.value.field == 'name'


@pytest.mark.skipif(os.geteuid() != 0, reason='systemd apps are installed by root')
def test_systemd_apps_of_the_user_in_the_same_shape(host, app_dir):
    user = pwd.getpwnam('nobody').pw_name
    converge(host, user=user, apps=[dict(name='sweb', supervisor='systemd', script=str(app_dir / 'server.js'), cwd=str(app_dir),
                                         settle_time=0)])
    sweb = info(host, user=user)['apps']['sweb']
    assert sweb['supervisor'] == 'systemd' and sweb['managed'] is True and sweb['instances_online'] == 1
    assert sweb['unstable_restarts'] is None and sweb['crash_restarts'] == 0
    assert sweb['recorded_release'] == os.path.realpath(str(app_dir))
    assert 'sweb' not in info(host)['apps']  # another user's systemd apps are not listed


@pytest.mark.parametrize('count, baseline, expected', [(5, {'0': 2}, 3), (5, None, 5), (1, {'0': 4}, 1), (3, {'0': 'x'}, 3)])
def test_crash_restarts(count, baseline, expected):
    assert crash_restarts({'pm_id': 0, 'restart_time': count}, baseline) == expected
