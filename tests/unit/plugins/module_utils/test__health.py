# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The health option: validation, HTTP against a real local server, commands, and its place in the lifecycle."""

from __future__ import annotations

import http.server
import os
import threading

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils import _pm2_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error, SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._health import normalise_health, probe
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_app import run_pm2_app


class Server:
    """An HTTP server on 127.0.0.1 answering every GET with ``status`` and ``body``; counts the requests."""

    def __init__(self):
        self.status, self.body, self.hits = 200, b'ok', 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the stdlib's name)
                owner.hits += 1
                self.send_response(owner.status)
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(('127.0.0.1', 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    server = Server()
    yield server
    server.httpd.shutdown()


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(_pm2_app, 'POLL_INTERVAL', 0.01)


def no_sleep(seconds):
    pass


# ----------------------------------------------------------------- validation

def test_defaults_are_the_deploy_roles():
    assert normalise_health({'port': 3000}) == dict(port=3000, url=None, command=None, path='/health', status=200, timeout=5,
                                                    retries=15, delay=1)
    assert normalise_health(None) is None


@pytest.mark.parametrize('value, field', [
    ({}, 'health'), ({'port': 1, 'command': 'true'}, 'health'), ('port=1', 'health'), ({'port': 1, 'bogus': 1}, 'health'),
    ({'port': 70000}, 'health.port'), ({'url': 'ftp://x'}, 'health.url'), ({'port': 1, 'path': 'health'}, 'health.path'),
    ({'command': '  '}, 'health.command'), ({'port': 1, 'status': 99}, 'health.status'), ({'port': 1, 'timeout': 0}, 'health.timeout'),
    ({'port': 1, 'retries': -1}, 'health.retries'),
])
def test_bad_health_names_the_field(value, field):
    with pytest.raises(SpecError) as err:
        normalise_health(value)
    assert err.value.field == field


# ----------------------------------------------------------------- probes

def test_http_passes_on_the_expected_status(server, fake_module):
    assert probe(fake_module(), normalise_health({'port': server.port, 'retries': 0})) is None
    server.status = 503
    assert probe(fake_module(), normalise_health({'url': 'http://127.0.0.1:%d/x' % server.port, 'status': 503, 'retries': 0})) is None


def test_http_retries_then_gives_the_last_answer(server, fake_module):
    server.status, server.body = 503, b'unhealthy\n'
    waits = []
    problem = probe(fake_module(), normalise_health({'port': server.port, 'retries': 2, 'delay': 3}), sleep=waits.append)
    assert problem == "GET http://127.0.0.1:%d/health: HTTP 503 'unhealthy' after 3 attempts" % server.port
    assert server.hits == 3 and waits == [3, 3]


def test_http_connection_error(fake_module):
    problem = probe(fake_module(), normalise_health({'port': 1, 'retries': 0}), sleep=no_sleep)
    assert problem.startswith('GET http://127.0.0.1:1/health: URLError') and 'after 1 attempts' in problem


def test_command_runs_without_a_shell(fake_module):
    module = fake_module(outputs=[(1, '', 'not yet'), (0, 'ok', '')])
    assert probe(module, normalise_health({'command': "check --name 'a b'", 'retries': 1}), sleep=no_sleep) is None
    assert module.calls == [['check', '--name', 'a b']] * 2
    module = fake_module(outputs=[(2, '', 'down')])
    assert probe(module, normalise_health({'command': 'check', 'retries': 0})) == "command check: rc=2 'down' after 1 attempts"


# ----------------------------------------------------------------- in pm2_app's run

def web(app_dir, **options):
    item = dict(name='web', script=str(app_dir / 'server.js'), cwd=str(app_dir), settle_time=0)
    item.update(options)
    return item


def run(host, check_mode=False, **params):
    module = host.module(check_mode=check_mode, **params)
    return run_pm2_app(module, module.params, check_mode)


def test_health_checked_after_readiness_and_on_runs_without_change(host, app_dir, server):
    item = web(app_dir, health={'port': server.port, 'retries': 0})
    assert run(host, apps=[item])['apps'][0]['status'] == 'online' and server.hits == 1
    again = run(host, apps=[item])
    assert again['changed'] is False and again['pm2_calls'] == 1 and server.hits == 2


def test_unhealthy_app_fails_naming_it_with_the_answer_and_its_logs(host, app_dir, server, monkeypatch):
    monkeypatch.setattr('time.sleep', no_sleep)
    server.status, server.body = 503, b'db down'
    with open(str(app_dir / 'err.log'), 'w') as handle:
        handle.write('Error: cannot reach the database\n')
    with pytest.raises(Pm2Error) as err:
        run(host, apps=[web(app_dir, error_file=str(app_dir / 'err.log'), health={'port': server.port, 'retries': 1})])
    failure = err.value.details['failures'][0]
    assert failure['app'] == 'web' and failure['why'] == 'failed its health check'
    assert failure['reason'][0] == "GET http://127.0.0.1:%d/health: HTTP 503 'db down' after 2 attempts" % server.port
    assert 'app web failed its health check' in str(err.value) and 'Error: cannot reach the database' in str(err.value)
    assert err.value.details['apps'][0]['status'] == 'unhealthy' and err.value.details['changed'] is True
    assert not os.path.exists(os.path.join(host.pm2_home, 'dump.pm2'))  # a failed run does not save


def test_check_mode_does_not_probe(host, app_dir, server):
    result = run(host, check_mode=True, apps=[web(app_dir, health={'port': server.port})])
    assert result['apps'][0]['action'] == 'start' and server.hits == 0


def test_command_health_by_name_and_stopped_apps_are_not_checked(host, app_dir):
    run(host, apps=[web(app_dir)])
    host.command_results = [(0, 'ok', '')]
    run(host, name='web', state='restarted', settle_time=0, health={'command': '/usr/local/bin/check-web --deep'})
    assert host.commands == [['/usr/local/bin/check-web', '--deep']]
    run(host, name='web', state='stopped', health={'command': '/usr/local/bin/check-web'})
    assert len(host.commands) == 1
