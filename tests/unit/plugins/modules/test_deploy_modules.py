# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The deploy's host modules through AnsibleModule: haproxy_servers against a peer speaking HAProxy's admin socket
protocol, pm2_deploy_lock, pm2_release and pm2_release_info on a temporary tree."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from unittest import mock

import pytest

from ansible.module_utils import basic

from ansible_collections.nodefleet.pm2.plugins.module_utils import _haproxy
from ansible_collections.nodefleet.pm2.plugins.modules import haproxy_servers, pm2_deploy_lock, pm2_release, pm2_release_info

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core before 2.19
    @contextlib.contextmanager
    def patch_module_args(args):
        with mock.patch.object(basic, '_ANSIBLE_ARGS', json.dumps({'ANSIBLE_MODULE_ARGS': args}).encode()):
            yield


@pytest.fixture
def run_module(capsys):
    def run(module, args):
        with patch_module_args(args), pytest.raises(SystemExit):
            module.main()
        return json.loads(capsys.readouterr().out)
    return run


class FakeHAProxy:
    """Answers `show stat` and `set server b/s state maint|ready` on a unix socket like HAProxy's admin socket.
    Sessions of a server in maintenance end after `drain_polls` reads; a server made ready is UP at once."""

    def __init__(self, path, servers, drain_polls=2):
        self.path = path
        self.servers = servers
        self.drain_polls = drain_polls
        self.commands = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(5)
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, dummy = self.sock.accept()
            except OSError:
                return
            line = conn.recv(4096).decode().strip()
            self.commands.append(line)
            conn.sendall(self.answer(line).encode())
            conn.close()

    def answer(self, line):
        if line == 'show stat':
            rows = ['# pxname,svname,scur,status']
            for (backend, server), state in self.servers.items():
                if state['status'] == 'MAINT' and state['sessions']:
                    state['polls'] = state.get('polls', 0) + 1
                    if state['polls'] >= self.drain_polls:
                        state['sessions'] = 0
                rows.append('%s,%s,%d,%s' % (backend, server, state['sessions'], state['status']))
            return '\n'.join(rows) + '\n'
        words = line.split()
        if words[:2] == ['set', 'server'] and len(words) == 5:
            backend, server = words[2].split('/')
            if (backend, server) not in self.servers:
                return 'No such server.\n'
            self.servers[(backend, server)]['status'] = 'MAINT' if words[4] == 'maint' else 'UP'
            return '\n'
        return 'Unknown command.\n'


@pytest.fixture
def lb(tmp_path, monkeypatch):
    monkeypatch.setattr(_haproxy.time, 'sleep', lambda s: None)
    monkeypatch.setattr(haproxy_servers.time, 'sleep', lambda s: None)
    servers = {('api', 'h1'): {'status': 'UP', 'sessions': 3}, ('web', 'h1'): {'status': 'UP', 'sessions': 0},
               ('api', 'h2'): {'status': 'UP', 'sessions': 1}}
    peer = FakeHAProxy(str(tmp_path / 'admin.sock'), servers)
    yield peer
    peer.sock.close()


def test_drain_waits_for_sessions_then_enable(run_module, lb):
    args = {'socket': lb.path, 'servers': [{'backend': 'api', 'server': 'h1'}, {'backend': 'web', 'server': 'h1'}]}
    result = run_module(haproxy_servers, dict(args, state='drained'))
    assert result['changed'] and [s['after'] for s in result['servers']] == ['MAINT', 'MAINT']
    assert result['servers'][0]['sessions'] == 0 and lb.servers[('api', 'h2')]['status'] == 'UP'
    assert 'set server api/h1 state maint' in lb.commands
    assert not run_module(haproxy_servers, dict(args, state='drained'))['changed']
    result = run_module(haproxy_servers, dict(args, state='enabled'))
    assert result['changed'] and [s['after'] for s in result['servers']] == ['UP', 'UP']


def test_check_mode_and_unknown_servers(run_module, lb):
    result = run_module(haproxy_servers, {'socket': lb.path, 'state': 'drained', '_ansible_check_mode': True,
                                          'servers': [{'backend': 'api', 'server': 'h1'}]})
    assert result['changed'] and lb.servers[('api', 'h1')]['status'] == 'UP'
    result = run_module(haproxy_servers, {'socket': lb.path, 'state': 'drained', 'servers': [{'backend': 'api', 'server': 'h9'}]})
    assert result['failed'] and 'servers: not in HAProxy: api/h9' in result['msg']


def test_sessions_that_never_end_fail_with_the_server_named(run_module, lb):
    lb.drain_polls = 10 ** 6
    result = run_module(haproxy_servers, {'socket': lb.path, 'state': 'drained', 'timeout': 0,
                                          'servers': [{'backend': 'api', 'server': 'h1'}]})
    assert result['failed'] and 'api/h1 (3 sessions)' in result['msg']


def test_no_socket(run_module, tmp_path):
    result = run_module(haproxy_servers, {'socket': str(tmp_path / 'none.sock'), 'state': 'enabled',
                                          'servers': [{'backend': 'api', 'server': 'h1'}]})
    assert result['failed'] and 'admin socket' in result['msg']


def test_lock_module(run_module, tmp_path):
    args = {'dir': str(tmp_path), 'project': 'shop', 'apps': ['api'], 'owner': {'token': 'a', 'user': 'u'}}
    assert run_module(pm2_deploy_lock, args)['taken'] == ['api']
    other = run_module(pm2_deploy_lock, dict(args, owner={'token': 'b'}))
    assert other['taken'] == [] and other['held']['api']['token'] == 'a'
    assert run_module(pm2_deploy_lock, dict(args, owner={'token': 'b'}, _ansible_check_mode=True))['held']['api']['user'] == 'u'
    assert run_module(pm2_deploy_lock, dict(args, state='absent'))['released'] == ['api']
    assert run_module(pm2_deploy_lock, dict(args, owner={}))['failed']


def test_release_modules_on_an_empty_host(run_module, tmp_path):
    result = run_module(pm2_release, {'path': str(tmp_path), 'release': 'r1', 'state': 'present'})
    assert result['failed'] and result['msg'].startswith('src:')
    info = run_module(pm2_release_info, {'path': str(tmp_path), 'pm2_home': str(tmp_path / 'pm2')})
    assert info['current'] == '' and info['on_disk'] == [] and info['rollback_target'] == '' and info['apps'] == {}
    assert os.path.isdir(tmp_path) and not os.path.exists(tmp_path / 'pm2' / 'pm2.pid')
