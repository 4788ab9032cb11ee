# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure parts of roles/pm2_watchdog/files/pm2_watchdog.py: decisions, locks, commands, metrics, alerts."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import socket
import threading
import time

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'roles', 'pm2_watchdog', 'files', 'pm2_watchdog.py')
_spec = importlib.util.spec_from_file_location('pm2_watchdog', SCRIPT)
wd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wd)

SETTINGS = {'failures': 3, 'heal_limit': 2, 'heal_window': 600}
OK = {'kind': 'ok', 'check': '', 'detail': 'GET http://127.0.0.1:3000/health: HTTP 200'}
FAIL = {'kind': 'failing', 'check': 'http', 'detail': 'GET http://127.0.0.1:3000/health: HTTP 500, expected 200'}
DOWN = {'kind': 'down', 'check': 'process', 'detail': 'no process of api runs under pm2'}
HELD = {'kind': 'held', 'detail': 'deploy lock of ci@ctl since x'}


def run(observations, state=None, start=1000.0, step=10.0):
    """Feeds observations one pass apart; heals are applied as the caller does. Returns (state, actions)."""
    state = state or wd.new_state()
    actions = []
    for i, observation in enumerate(observations):
        now = start + i * step
        state, todo = wd.decide(state, observation, now, SETTINGS)
        if todo == 'heal':
            state = wd.after_heal(state, now)
        actions.append(todo)
    return state, actions


# --------------------------------------------------------------------------- decide

def test_heals_after_k_consecutive_failures_then_alerts_the_recovery():
    state, actions = run([OK, FAIL, FAIL, FAIL, OK])
    assert actions == [None, None, None, 'heal', 'recovered']
    assert state['heals_total'] == 1 and state['failures'] == 0 and not state['alerted']
    assert state['last_ok'] == 1040.0


def test_the_streak_starts_right_after_the_last_good_pass():
    state, _actions = run([OK, OK, FAIL, FAIL])
    assert (state['last_ok'], state['first_failure'], state['failures']) == (1010.0, 1020.0, 2)


def test_a_success_in_between_resets_the_count():
    _state, actions = run([FAIL, FAIL, OK, FAIL, FAIL, OK])
    assert actions == [None] * 6


def test_at_most_m_heals_per_window_then_one_give_up_alert_only():
    state, actions = run([FAIL] * 15)
    assert actions.count('heal') == 2
    assert actions.count('alert_limit') == 1
    assert actions.index('alert_limit') > max(i for i, a in enumerate(actions) if a == 'heal')
    assert state['limited'] and state['heals_total'] == 2


def test_heals_again_once_the_window_has_passed():
    state, actions = run([FAIL] * 9)
    assert actions.count('heal') == 2 and actions[-1] == 'alert_limit'
    _state, later = run([FAIL] * 4, state=state, start=1000.0 + 700)
    assert later == ['heal', None, None, 'heal']  # still failing when the window frees a heal: at once


def test_recovery_after_the_give_up_clears_the_limit():
    state, actions = run([FAIL] * 9 + [OK])
    assert actions[-1] == 'recovered'
    assert not state['limited'] and not state['alerted']


def test_a_down_app_is_alerted_once_and_never_healed():
    state, actions = run([DOWN] * 8 + [OK])
    assert actions == [None, None, 'alert_down', None, None, None, None, None, 'recovered']
    assert state['heals_total'] == 0


def test_a_held_lock_stops_counting_and_acting():
    state, actions = run([FAIL, FAIL, HELD, HELD, FAIL, FAIL])
    assert actions == [None] * 6
    assert state['failures'] == 2 and not state['held']


def test_an_alert_before_a_deploy_is_recovered_after_it():
    _state, actions = run([FAIL, FAIL, FAIL, HELD, HELD, OK])
    assert actions == [None, None, 'heal', None, None, 'recovered']


def test_heal_limit_zero_only_alerts():
    state, actions = wd.new_state(), []
    for i in range(4):
        state, todo = wd.decide(state, FAIL, 1000.0 + i, dict(SETTINGS, heal_limit=0))
        actions.append(todo)
    assert actions == [None, None, 'alert_limit', None]


# --------------------------------------------------------------------------- locks

@pytest.mark.parametrize('text, mtime, held', [
    (json.dumps({'token': 't', 'time': 1000}), 0, True),         # taken 500 s ago, TTL 3600
    (json.dumps({'token': 't', 'time': 1000 - 3600}), 0, False),  # older than the TTL: stale
    ('', 1400, True),                                              # being written: its mtime counts
    ('{"tok', 1500 - 4000, False),                                 # a broken leftover, old
])
def test_lock_held(text, mtime, held):
    assert wd.lock_held(text, mtime, 1500, 3600)[0] is held


def host(tmp_path, apps=('api',)):
    cfg = {'host': 'node1', 'project': 'shop', 'lock_dir': str(tmp_path / 'locks'), 'lock_ttl': 3600,
           'state_dir': str(tmp_path / 'state'), 'users': [],
           'apps': [{'name': name} for name in apps]}
    return wd.Host(cfg)


def test_the_heal_takes_the_deploy_lock_and_gives_it_back(tmp_path):
    h = host(tmp_path)
    token = h.own_lock('api')
    lock = json.loads((tmp_path / 'locks' / 'shop.api.lock').read_text())
    assert lock['token'] == token and lock['user'] == 'pm2_watchdog' and lock['pid'] == 0
    assert h.read_lock('api')[0] is True  # a deploy sees it held
    h.drop_lock('api', token)
    assert not (tmp_path / 'locks' / 'shop.api.lock').exists()


def test_no_heal_while_a_deploy_holds_the_lock_and_its_lock_is_never_removed(tmp_path):
    h = host(tmp_path)
    (tmp_path / 'locks').mkdir()
    deploy = {'token': 'deploy1', 'time': int(time.time()), 'user': 'ci', 'controller': 'ctl'}
    (tmp_path / 'locks' / 'shop.api.lock').write_text(json.dumps(deploy))
    assert h.own_lock('api') is None
    h.drop_lock('api', 'someone-else')
    h.drop_leftover_locks()
    assert json.loads((tmp_path / 'locks' / 'shop.api.lock').read_text()) == deploy


def test_a_lock_left_by_a_killed_pass_of_this_host_is_removed(tmp_path):
    h = host(tmp_path, apps=('api', 'web'))
    h.own_lock('api')
    other = host(tmp_path, apps=('web',))
    other.cfg['host'] = 'node2'  # same lock dir, another host's watchdog: not ours
    other.own_lock('web')
    h.drop_leftover_locks()
    assert not (tmp_path / 'locks' / 'shop.api.lock').exists()
    assert (tmp_path / 'locks' / 'shop.web.lock').exists()


# --------------------------------------------------------------------------- heal commands

USER = {'name': 'app', 'home': '/home/app', 'pm2_home': '/home/app/.pm2'}


def test_pm2_runs_as_the_app_user_with_a_clean_environment():
    prefix = wd.pm2_prefix(USER, '/usr/local/bin/pm2')
    assert prefix[:6] == ['runuser', '-u', 'app', '--', 'env', '-i']
    assert 'PM2_HOME=/home/app/.pm2' in prefix and 'HOME=/home/app' in prefix
    assert prefix[-1] == '/usr/local/bin/pm2'


@pytest.mark.parametrize('app, commands', [
    ({'name': 'api', 'supervisor': 'pm2', 'exec_mode': 'cluster'}, [['P', 'reload', 'api']]),
    ({'name': 'web', 'supervisor': 'pm2', 'exec_mode': 'fork'}, [['P', 'restart', 'web']]),
    ({'name': 'mail', 'supervisor': 'systemd', 'exec_mode': 'fork',
      'units': ['nodefleet-mail@0.service', 'nodefleet-mail@1.service']},
     [['systemctl', 'restart', 'nodefleet-mail@0.service'], ['systemctl', 'restart', 'nodefleet-mail@1.service']]),
])
def test_heal_commands(app, commands):
    assert wd.heal_command(app, ['P']) == commands


# --------------------------------------------------------------------------- metrics

def jlist_entry(name, pm_id, instance, mode='cluster_mode', status='online', pid=100, **env):
    return {'name': name, 'pm_id': pm_id, 'pid': pid,
            'pm2_env': dict({'exec_mode': mode, 'status': status, 'NODE_APP_INSTANCE': instance, 'restart_time': 3}, **env)}


def test_pm2_samples_label_project_apps_with_the_release():
    cfg = {'project': 'shop', 'project_apps': ['api']}
    processes = [jlist_entry('api', 0, 0, max_memory_restart=1024), jlist_entry('api', 1, 1),
                 jlist_entry('other', 2, 0, mode='fork_mode'),
                 {'name': 'pm2-logrotate', 'pm_id': 3, 'pid': 5, 'pm2_env': {'pmx_module': True}}]
    samples = wd.pm2_samples(processes, cfg, 'app', 'abc123')
    assert [s[0]['app'] for s in samples] == ['api', 'api', 'other']
    assert samples[0][0] == {'project': 'shop', 'app': 'api', 'app_instance': '0', 'supervisor': 'pm2',
                             'release': 'abc123', 'user': 'app', 'exec_mode': 'cluster'}
    assert samples[0][1] == {'status': 'online', 'pid': 100, 'restarts': 3, 'max_memory': 1024}
    assert samples[2][0]['project'] == '' and samples[2][0]['release'] == '' and samples[2][0]['exec_mode'] == 'fork'


SHOW = """Id=nodefleet-mail@0.service
ActiveState=active
SubState=running
MainPID=42
NRestarts=2
User=app
MemoryMax=209715200

Id=nodefleet-mail@1.service
ActiveState=failed
SubState=failed
MainPID=0
NRestarts=16
User=app
MemoryMax=infinity
"""


def test_systemd_units_become_samples():
    units = wd.parse_systemctl_show(SHOW)
    samples = wd.systemd_samples(units, {'project': 'shop', 'project_apps': ['mail']}, 'abc123')
    assert [(s[0]['app_instance'], s[1]['status'], s[1]['pid'], s[1]['restarts'], s[1]['max_memory']) for s in samples] == [
        ('0', 'online', 42, 2, 209715200), ('1', 'errored', 0, 16, 0)]
    assert {s[0]['supervisor'] for s in samples} == {'systemd'}


def test_process_families_for_a_live_and_a_stopped_process():
    labels = {'app': 'api', 'app_instance': '0'}
    samples = [(labels, {'status': 'online', 'pid': 7, 'restarts': 1, 'max_memory': 100}),
               (dict(labels, app_instance='1'), {'status': 'stopped', 'pid': 0, 'restarts': 4, 'max_memory': 0})]
    families = {f[0]: f[3] for f in wd.process_families(
        samples, lambda pid: {'cpu': 1.5, 'rss': 50, 'start': 90.0, 'state': 'S'}, 100.0)}
    assert [v for _l, v in families['nodefleet_pm2_process_up']] == [1, 0]
    assert [l['status'] for l, _v in families['nodefleet_pm2_process_status']] == ['online', 'stopped']
    assert families['nodefleet_pm2_process_cpu_seconds_total'] == [(labels, 1.5)]
    assert families['nodefleet_pm2_process_uptime_seconds'] == [(labels, 10.0)]
    assert families['nodefleet_pm2_process_max_memory_bytes'] == [(labels, 100)]


def test_an_online_status_without_a_live_process_is_not_up():
    samples = [({'app': 'api'}, {'status': 'online', 'pid': 7, 'restarts': 0, 'max_memory': 0})]
    families = {f[0]: f[3] for f in wd.process_families(samples, lambda pid: None, 100.0)}
    assert families['nodefleet_pm2_process_up'] == [({'app': 'api'}, 0)]


def test_render_prom_escapes_labels_and_skips_empty_families():
    text = wd.render_prom([('m_total', 'counter', 'Help.', [({'app': 'a"b\\c\nd', 'x': 'y'}, 2)]),
                           ('empty', 'gauge', 'Nothing.', [])])
    assert text == '# HELP m_total Help.\n# TYPE m_total counter\nm_total{app="a\\"b\\\\c\\nd",x="y"} 2.0\n'


def test_watchdog_families_per_app():
    cfg = {'project': 'shop', 'interval': 2, 'failures': 3,
           'apps': [{'name': 'api', 'supervisor': 'pm2'}, {'name': 'mail', 'supervisor': 'systemd'}]}
    states = {'api': dict(wd.new_state(), failures=2, healthy=False, heals_total=1, alerts_total={'failing': 1})}
    run_info = {'start': 1.0, 'end': 1.5, 'cpu': 0.03, 'max_rss': 9e6, 'alert_errors': {'mail': 1}, 'pending': 1}
    families = {f[0]: f[3] for f in wd.watchdog_families(cfg, states, run_info)}
    assert families['nodefleet_pm2_watchdog_failures'] == [
        ({'project': 'shop', 'app': 'api', 'supervisor': 'pm2'}, 2), ({'project': 'shop', 'app': 'mail', 'supervisor': 'systemd'}, 0)]
    assert [v for _l, v in families['nodefleet_pm2_watchdog_healthy']] == [0, 1]
    assert families['nodefleet_pm2_watchdog_heals_total'][0][1] == 1
    assert families['nodefleet_pm2_watchdog_alerts_total'] == [({'project': 'shop', 'app': 'api', 'event': 'failing'}, 1)]
    assert families['nodefleet_pm2_watchdog_alert_errors_total'] == [({'channel': 'mail'}, 1)]
    assert families['nodefleet_pm2_watchdog_run_duration_seconds'] == [({}, 0.5)]


# --------------------------------------------------------------------------- alerts

def test_alert_payload_and_subject_name_host_app_action():
    cfg = {'host': 'node1', 'project': 'shop', 'heal_limit': 3, 'heal_window': 3600}
    state = dict(wd.new_state(), failures=3, check='instances,http', detail='d', first_failure=0.0, heals=[1.0], last_ok=-2.0)
    payload = wd.alert_payload(cfg, {'name': 'api', 'supervisor': 'pm2'}, state, 'failing', 'pm2 reload', True, 10.0, 'r1')
    assert {k: payload[k] for k in ('host', 'app', 'check', 'failures', 'action', 'action_ok', 'release')} == {
        'host': 'node1', 'app': 'api', 'check': 'instances,http', 'failures': 3, 'action': 'pm2 reload',
        'action_ok': True, 'release': 'r1'}
    assert payload['time'] == '1970-01-01T00:00:10.000+00:00' and payload['timestamp'] == 10.0
    assert (payload['last_ok_at'], payload['first_failure_at']) == ('1969-12-31T23:59:58.000+00:00', '1970-01-01T00:00:00.000+00:00')
    assert wd.mail_subject(payload) == '[nodefleet watchdog] node1 shop/api failing: 3 failures, action pm2 reload'
    assert wd.mail_subject(dict(payload, event='recovered')) == '[nodefleet watchdog] node1 shop/api recovered'


def test_undelivered_alerts_stay_in_the_outbox_for_a_while(tmp_path):
    h = host(tmp_path)
    h.cfg.update(webhook={'url': 'http://127.0.0.1:9/x'}, mail={'to': []})

    def refuse(_payload):
        raise OSError('connection refused')

    h.send_webhook = refuse
    fresh = {'channel': 'webhook', 'payload': {'app': 'api'}, 'tries': 0, 'queued': time.time()}
    old = dict(fresh, queued=time.time() - wd.OUTBOX_MAX_AGE - 1)
    errors = {}
    kept = h.deliver([fresh, old], errors)
    assert kept == [dict(fresh, tries=1)] and errors == {'webhook': 2}


# --------------------------------------------------------------------------- probe (a real local HTTP server)

@pytest.fixture(name='server')
def fixture_server():
    replies = {'/ok': 200, '/bad': 500}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == '/slow':
                time.sleep(1.5)
            self.send_response(replies.get(self.path, 200))
            self.end_headers()

        def log_message(self, *args):  # pylint: disable=arguments-differ
            pass

    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield 'http://127.0.0.1:%d' % httpd.server_address[1]
    httpd.shutdown()


@pytest.mark.parametrize('path, status, ok, detail', [
    ('/ok', 200, True, 'HTTP 200'),
    ('/bad', 200, False, 'HTTP 500, expected 200'),
    ('/bad', 500, True, 'HTTP 500'),
    ('/slow', 200, False, 'no answer within 0.5 s'),
])
def test_probe(server, path, status, ok, detail):
    result = wd.probe({'url': server + path, 'status': status, 'timeout': 0.5})
    assert result[0] is ok and result[1].endswith(detail)


def test_probe_refused():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    ok, detail = wd.probe({'url': 'http://127.0.0.1:%d/health' % port, 'status': 200, 'timeout': 0.5})
    assert not ok and 'refused' in detail.lower()
