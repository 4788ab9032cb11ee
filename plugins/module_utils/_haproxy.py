# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""HAProxy's admin socket: read the servers' state and sessions, put servers in maintenance and back."""

from __future__ import annotations

import socket
import time


class HAProxyError(Exception):
    pass


def parse_stat(text: str) -> dict:
    """(backend, server) -> {'status': 'UP'|'DOWN'|'MAINT'|..., 'sessions': int} from `show stat` CSV."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith('# '):
        raise HAProxyError('unexpected answer to "show stat": %s' % text[:200])
    head = lines[0][2:].split(',')
    try:
        col_status, col_scur = head.index('status'), head.index('scur')
    except ValueError:
        raise HAProxyError('"show stat" has no status/scur column')
    servers = {}
    for line in lines[1:]:
        row = line.split(',')
        if len(row) <= max(col_status, col_scur) or row[1] in ('FRONTEND', 'BACKEND'):
            continue
        servers[(row[0], row[1])] = {'status': row[col_status], 'sessions': int(row[col_scur] or 0)}
    return servers


def base_status(status: str) -> str:
    """'UP 1/2' -> 'UP'; 'MAINT (via x/y)' -> 'MAINT'; 'no check' stays."""
    return status if status == 'no check' else status.split(' ')[0]


class AdminSocket:
    def __init__(self, path: str, timeout: float = 5.0):
        self.path = path
        self.timeout = timeout
        self.commands = 0

    def command(self, line: str) -> str:
        self.commands += 1
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(self.timeout)
        try:
            conn.connect(self.path)
            conn.sendall(line.encode('ascii') + b'\n')
            chunks = []
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as exc:
            raise HAProxyError('HAProxy admin socket %s: %s' % (self.path, exc))
        finally:
            conn.close()
        return b''.join(chunks).decode('utf-8', 'replace')

    def servers(self) -> dict:
        return parse_stat(self.command('show stat'))

    def set_state(self, backend: str, server: str, state: str) -> None:
        answer = self.command('set server %s/%s state %s' % (backend, server, state)).strip()
        if answer:
            raise HAProxyError('set server %s/%s state %s: %s' % (backend, server, state, answer))


def missing(servers: dict, wanted: list[tuple]) -> list[str]:
    return ['%s/%s' % pair for pair in wanted if pair not in servers]


def wait_until(admin: AdminSocket, wanted: list[tuple], done, timeout: float, interval: float = 0.25) -> tuple[bool, dict]:
    """Poll `show stat` until done(state) holds for every wanted server, or timeout; (ok, last states)."""
    deadline = time.time() + timeout
    while True:
        states = admin.servers()
        if all(done(states[pair]) for pair in wanted):
            return True, states
        if time.time() >= deadline:
            return False, states
        time.sleep(interval)
