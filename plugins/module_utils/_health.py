# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""An app's health check (option ``health`` of pm2_app): an HTTP request or a command, retried, run by pm2_app after
the app is ready, in the same module call. The same fields and defaults as pm2_deploy_apps[].health."""

from __future__ import annotations

import shlex
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.error import HTTPError

from ansible.module_utils.urls import open_url

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import SpecError

Health = Dict[str, Any]

# The pm2_deploy role's defaults (pm2_deploy_health_*), so a check means the same in both places.
DEFAULTS = {'path': '/health', 'status': 200, 'timeout': 5, 'retries': 15, 'delay': 1}
FIELDS = ('url', 'port', 'path', 'status', 'timeout', 'retries', 'delay', 'command')
BODY_CHARS = 200
HEALTH_ARGSPEC = {
    'url': {'type': 'str'},
    'port': {'type': 'int'},
    'path': {'type': 'str'},
    'status': {'type': 'int'},
    'timeout': {'type': 'int'},
    'retries': {'type': 'int'},
    'delay': {'type': 'int'},
    'command': {'type': 'str'},
}


def _int(field: str, value: Any, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise SpecError('health.%s' % field, 'must be an integer from %d%s' % (low, ' to %d' % high if high else ''))
    return value


def normalise_health(value: Any) -> Optional[Health]:
    """The health option with its defaults, or None; exactly one of url, port, command."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(FIELDS):
        raise SpecError('health', 'expected a dict of %s' % ', '.join(FIELDS))
    given = [k for k in ('url', 'port', 'command') if value.get(k) not in (None, '')]
    if len(given) != 1:
        raise SpecError('health', 'give exactly one of url, port (+ path) or command, got %s' % (', '.join(given) or 'none'))
    health = {k: DEFAULTS[k] if value.get(k) is None else value[k] for k in DEFAULTS}
    health.update(url=value.get('url'), port=value.get('port'), command=value.get('command'))
    if health['url'] is not None and not str(health['url']).startswith(('http://', 'https://')):
        raise SpecError('health.url', 'must start with http:// or https://')
    if health['port'] is not None:
        _int('port', health['port'], 1, 65535)
        if not str(health['path']).startswith('/'):
            raise SpecError('health.path', 'must start with /')
    if health['command'] is not None and not shlex.split(str(health['command'])):
        raise SpecError('health.command', 'is empty')
    _int('status', health['status'], 100, 599)
    for field in ('timeout', 'retries', 'delay'):
        _int(field, health[field], 1 if field == 'timeout' else 0)
    return health


def target(health: Health) -> str:
    """What is checked, for messages."""
    if health['command']:
        return 'command %s' % health['command']
    return 'GET %s' % (health['url'] or 'http://127.0.0.1:%d%s' % (health['port'], health['path']))


def _http(health: Health) -> Tuple[bool, str]:
    url = health['url'] or 'http://127.0.0.1:%d%s' % (health['port'], health['path'])
    try:
        response = open_url(url, timeout=health['timeout'], follow_redirects='safe')
        code, body = response.getcode(), response.read(BODY_CHARS)
    except HTTPError as exc:
        code, body = exc.code, exc.read(BODY_CHARS) if exc.fp else b''
    except Exception as exc:  # pylint: disable=broad-except
        return False, '%s: %s' % (type(exc).__name__, exc)
    text = body.decode('utf-8', 'replace').strip()
    return code == health['status'], 'HTTP %d%s' % (code, ' %r' % text if text else '')


def _command(module: Any, health: Health) -> Tuple[bool, str]:
    rc, out, err = module.run_command(shlex.split(health['command']))
    text = (err or out).strip()[-BODY_CHARS:]
    return rc == 0, 'rc=%d%s' % (rc, ' %r' % text if text else '')


def probe(module: Any, health: Health, sleep=time.sleep) -> Optional[str]:
    """None once the check passes (up to retries + 1 attempts, delay seconds apart), else the last answer or error."""
    answer = ''
    for attempt in range(health['retries'] + 1):
        if attempt:
            sleep(health['delay'])
        ok, answer = _command(module, health) if health['command'] else _http(health)
        if ok:
            return None
    return '%s: %s after %d attempts' % (target(health), answer, health['retries'] + 1)


def check_once(module: Any, health: Health) -> Tuple[bool, str]:
    """One attempt: (healthy, the answer or error)."""
    return _command(module, health) if health['command'] else _http(health)


def probe_all(module: Any, checks: List[Dict[str, Any]], attempts: int = 1, delay: float = 0.5, sleep=time.sleep) -> Dict[str, Dict[str, Any]]:
    """Several apps' checks (each a health dict plus its app's ``name``), all tried in turns up to ``attempts`` times:
    name -> {'healthy', 'detail', 'attempts'}. pm2_release probes this way right after an activation, briefly, and
    leaves what is still unhealthy to a wait the user can watch."""
    pending = dict((c['name'], normalise_health(dict((k, v) for k, v in c.items() if k != 'name'))) for c in checks)
    results: Dict[str, Dict[str, Any]] = {}
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            sleep(delay)
        for name in list(pending):
            ok, answer = check_once(module, pending[name])
            results[name] = {'healthy': ok, 'detail': '%s: %s' % (target(pending[name]), answer), 'attempts': attempt}
            if ok:
                del pending[name]
        if not pending:
            break
    return results
