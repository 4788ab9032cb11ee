# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The deploy's inputs: each bad value is refused with a message naming the variable and the app."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.nodefleet.pm2.plugins.plugin_utils._deploy_inputs import (
    InputError,
    host_inputs,
    parse_serial,
    topology_violations,
)

BASE = {
    'pm2_deploy_project': 'shop', 'pm2_deploy_to': '/srv/shop', 'pm2_deploy_user': 'app', 'pm2_deploy_group': '',
    'pm2_deploy_env_dir': '/etc/nodefleet/env', 'pm2_deploy_keep_releases': 5, 'pm2_deploy_shared_dirs': ['logs'],
    'pm2_deploy_shared_links': {}, 'pm2_deploy_min_free_mb': 512, 'pm2_deploy_instances': {},
    'pm2_deploy_health_retries': 15, 'pm2_deploy_health_delay': 1, 'pm2_deploy_health_timeout': 5,
    'pm2_deploy_apps': [
        {'name': 'api', 'script': 'dist/server.js', 'exec_mode': 'cluster', 'instances': 2, 'env': {'PORT': '3000'},
         'health': {'port': 3000}, 'lb_backend': 'api', 'pm2': {'wait_ready': True}},
        {'name': 'billing', 'script': 'dist/server.js', 'singleton': 'fleet', 'run_on': 'node1',
         'env': {'PORT': 3001}, 'env_file': True, 'health': {'url': 'http://127.0.0.1:3001/ping', 'status': 204}},
    ],
}
KNOWN = {'node1', 'node2', 'prod', 'all'}


def inputs(host='node1', groups=('prod',), **changes):
    v = copy.deepcopy(BASE)
    v.update(changes)
    return host_inputs(host, v, list(groups), KNOWN)


def test_resolves_apps_items_checks_and_lb_servers():
    got = inputs()
    assert [a['name'] for a in got['apps']] == ['api', 'billing']
    api = got['items'][0]
    assert api['script'] == '/srv/shop/current/dist/server.js' and api['cwd'] == '/srv/shop/current'
    assert api['wait_ready'] is True and api['instances'] == 2 and api['state'] == 'started'
    assert got['items'][1]['env_file'] == '/etc/nodefleet/env/app/billing.env'
    assert got['items'][1]['env'] == {'PORT': '3001'}
    assert got['health'][0] == {'name': 'api', 'port': 3000, 'path': '/health', 'status': 200, 'timeout': 5, 'retries': 15, 'delay': 1}
    assert got['health'][1]['url'] == 'http://127.0.0.1:3001/ping' and got['health'][1]['status'] == 204
    assert got['lb_servers'] == [{'backend': 'api', 'server': 'node1', 'app': 'api'}]
    assert got['lock_apps'] == ['api', 'billing'] and got['fleet_singletons'] == ['billing']


def test_apps_of_other_hosts_are_absent_here():
    got = inputs(host='node2')
    assert [a['name'] for a in got['apps']] == ['api']
    assert got['items'][-1] == {'name': 'billing', 'state': 'absent'}


def test_per_host_instance_counts():
    assert inputs(pm2_deploy_instances={'api': 'max'})['items'][0]['instances'] == 'max'


@pytest.mark.parametrize('change, message', [
    ({'pm2_deploy_apps': []}, 'pm2_deploy_apps: the project needs at least one app'),
    ({'pm2_deploy_to': 'srv/shop'}, 'pm2_deploy_to'),
    ({'pm2_deploy_project': 'Shop!'}, 'pm2_deploy_project'),
    ({'pm2_deploy_keep_releases': 1}, 'pm2_deploy_keep_releases: must be at least 2'),
    ({'pm2_deploy_instances': {'api': 0}}, 'pm2_deploy_instances[api]: 0 instances'),
    ({'pm2_deploy_instances': {'api': 1000000}}, 'pm2_deploy_instances[api]: must be at most 256'),
    ({'pm2_deploy_instances': {'nope': 2}}, 'pm2_deploy_instances: nope is not an app'),
    ({'pm2_deploy_health_retries': 'abc'}, 'pm2_deploy_health_retries: expected a whole number'),
])
def test_bad_deploy_variables(change, message):
    with pytest.raises(InputError) as err:
        inputs(**change)
    assert message in str(err.value)


def app_error(**app_changes):
    apps = copy.deepcopy(BASE['pm2_deploy_apps'])
    apps[0].update(app_changes)
    apps[0] = dict((k, v) for k, v in apps[0].items() if v is not None)
    with pytest.raises(InputError) as err:
        inputs(pm2_deploy_apps=apps)
    return str(err.value)


def test_bad_apps_are_named_by_name():
    assert 'pm2_deploy_apps[api].health: needs port' in app_error(health={'path': '/x'})
    assert 'pm2_deploy_apps[api].health: every app needs a health check' in app_error(health=None)
    assert 'pm2_deploy_apps[api].health.port: must be at most 65535' in app_error(health={'port': 70000})
    assert 'pm2_deploy_apps[api].health: unknown key helth' in app_error(health={'port': 1, 'helth': 1})
    assert 'pm2_deploy_apps[api].exec_mode' in app_error(exec_mode='spawn')
    assert 'pm2_deploy_apps[api].script' in app_error(script='/abs/server.js')
    assert 'pm2_deploy_apps[api]: unknown key scirpt' in app_error(scirpt='x')
    assert 'pm2_deploy_apps[api].pm2: instances is set by the deploy' in app_error(pm2={'instances': 3})
    assert 'pm2_deploy_apps[api].run_on: nowhere' in app_error(run_on='nowhere')
    assert 'pm2_deploy_apps[api].env_file' in app_error(env_file='relative.env')
    assert 'pm2_deploy_apps[0].name' in app_error(name='Bad Name')
    assert "pm2_deploy_apps[0].name: 'evil.json' contains .json" in app_error(name='evil.json')


def test_same_port_twice_on_a_host_is_refused():
    apps = copy.deepcopy(BASE['pm2_deploy_apps'])
    apps[1]['env'] = {'PORT': '3000'}
    with pytest.raises(InputError) as err:
        inputs(pm2_deploy_apps=apps)
    assert 'port 3000 is also the port of api' in str(err.value)


def test_duplicate_names():
    apps = copy.deepcopy(BASE['pm2_deploy_apps'])
    apps[1]['name'] = 'api'
    with pytest.raises(InputError) as err:
        inputs(pm2_deploy_apps=apps)
    assert 'pm2_deploy_apps[api]: the name is listed twice' in str(err.value)


@pytest.mark.parametrize('value, expected', [(1, [1]), ('2', [2]), ('34%', ['34%']), ([1, '50%', '100%'], [1, '50%', '100%'])])
def test_serial(value, expected):
    assert parse_serial(value) == expected


@pytest.mark.parametrize('value', ['abc', 0, -1, '0%', '150%', [], [1, 0], True])
def test_bad_serial(value):
    with pytest.raises(InputError) as err:
        parse_serial(value)
    assert 'pm2_deploy_serial' in str(err.value)


def test_topology():
    one = {'name': 'device', 'singleton': 'host', 'exec_mode': 'cluster', 'instances': 2}
    bill = {'name': 'billing', 'singleton': 'fleet', 'exec_mode': 'fork', 'instances': 1}
    placed = {'h1': [one, bill], 'h2': [dict(one, exec_mode='fork', instances=1), bill]}
    out = topology_violations(placed, ['h1', 'h2'], ['billing'])
    assert 'device is a host singleton but runs in cluster mode on h1' in out
    assert 'device is a host singleton but asks for 2 instances on h1' in out
    assert 'billing is a fleet singleton but would run on 2 hosts of the target set: h1, h2' in out
    assert topology_violations({'h1': []}, ['h1'], ['billing']) == [
        'billing is a fleet singleton but would run on 0 hosts of the target set (run_on names none of h1)']
