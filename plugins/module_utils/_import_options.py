# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_import's options, checked before the ecosystem file is evaluated or anything is written: every error starts
with the name of the option (``user: ...``, ``health.port: ...``, ``environment.NODE_OPTIONS: ...``)."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Optional

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import EcosystemError
from ansible_collections.nodefleet.pm2.plugins.module_utils._ecosystem import ECOSYSTEM_EXTENSIONS
from ansible_collections.nodefleet.pm2.plugins.module_utils._health import FIELDS as HEALTH_KEYS
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_values import kind_of
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import ENV_KEY_RE

# The OS user rule of nodefleet.pm2.pm2_runtime (pm2_runtime_users[].name, roles/pm2_runtime/vars/main.yml).
USER_RE = re.compile(r'^[a-z_][a-z0-9_-]{0,31}$')
MAX_TIMEOUT = 600
# health's numbers and their bounds (the pm2_deploy role's health check takes the same).
HEALTH_NUMBERS = (('status', 100, 599), ('retries', 0, 1000), ('delay', 0, 3600), ('timeout', 1, 3600))


def _whole(value: Any, low: int, high: int) -> Optional[int]:
    """value as an int in [low, high], or None (accepts digit strings: inventory values often are strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and re.match(r'^\d+$', value.strip()):
        value = int(value)
    if isinstance(value, int) and low <= value <= high:
        return value
    return None


def _check_health_target(health: Dict[str, Any]) -> None:
    """Exactly one of: command, url, port (and path)."""
    if 'command' in health:
        if not isinstance(health['command'], str) or not health['command'].strip():
            raise EcosystemError('health.command: must be a non-empty command line')
        both = sorted({'port', 'url', 'path'} & set(health))
        if both:
            raise EcosystemError('health: give command or an HTTP check (%s), not both' % ', '.join(both))
    elif 'url' in health:
        if not isinstance(health['url'], str) or not re.match(r'^https?://\S+$', health['url']):
            raise EcosystemError('health.url: must be an http:// or https:// URL')
        if 'port' in health or 'path' in health:
            raise EcosystemError('health: give url, or port (and path), not both')
    elif 'port' not in health:
        raise EcosystemError('health: needs port (and path), url or command')


def check_health(health: Any) -> Dict[str, Any]:
    """The health option, checked like pm2_deploy_apps[].health; returns it with numbers as numbers."""
    if not isinstance(health, dict):
        raise EcosystemError('health: must be a dict like {port: 3000, path: /ready} or {command: ...}')
    unknown = sorted(set(health) - set(HEALTH_KEYS))
    if unknown:
        raise EcosystemError('health: unknown key %s (known: %s)' % (', '.join(map(str, unknown)), ', '.join(HEALTH_KEYS)))
    _check_health_target(health)
    checked = dict(health)
    if 'port' in health:
        checked['port'] = _whole(health['port'], 1, 65535)
        if checked['port'] is None:
            raise EcosystemError('health.port: must be a port number from 1 to 65535')
    if 'path' in health and (not isinstance(health['path'], str) or not health['path'].startswith('/')):
        raise EcosystemError('health.path: must start with /')
    for key, low, high in HEALTH_NUMBERS:
        if key in health:
            checked[key] = _whole(health[key], low, high)
            if checked[key] is None:
                raise EcosystemError('health.%s: must be a whole number from %d to %d' % (key, low, high))
    return checked


def _check_paths(params: Dict[str, Any]) -> None:
    src = params['src']
    ext = os.path.splitext(src)[1].lower()
    if not os.path.exists(src):
        raise EcosystemError('src: %s does not exist' % src)
    if not os.path.isfile(src):
        raise EcosystemError('src: %s is not a file' % src)
    if ext not in ECOSYSTEM_EXTENSIONS:
        raise EcosystemError('src: %s: unknown ecosystem file type %r (expected %s)' % (src, ext, ', '.join(ECOSYSTEM_EXTENSIONS)))
    existing = params['dest']
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise EcosystemError('dest: %s is not a directory' % existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EcosystemError('dest: cannot write to %s (permission denied)' % existing)
    vault_file = params.get('vault_password_file')
    if vault_file is not None:
        if not os.path.exists(vault_file):
            raise EcosystemError('vault_password_file: %s does not exist' % vault_file)
        if not os.path.isfile(vault_file):
            raise EcosystemError('vault_password_file: %s is not a file' % vault_file)


def _check_identity(params: Dict[str, Any]) -> None:
    if not params['vault_id'] or re.search(r'[;\s]', params['vault_id']):
        raise EcosystemError('vault_id: must be a non-empty label without ";" or spaces')
    user = params['user']
    if not USER_RE.match(user):
        raise EcosystemError('user: %r is not a user name nodefleet.pm2.pm2_runtime can create (%s)' % (user, USER_RE.pattern))
    if user == 'root':
        raise EcosystemError('user: root is refused: the apps run as an unprivileged user that nodefleet.pm2.pm2_runtime creates')


def _check_name_lists(params: Dict[str, Any]) -> None:
    for option in ('secret_names', 'plain_names'):
        for name in params[option]:
            if not ENV_KEY_RE.match(name):
                raise EcosystemError('%s: %r is not an environment variable name' % (option, name))
    both = sorted({n.upper() for n in params['secret_names']} & {n.upper() for n in params['plain_names']})
    if both:
        raise EcosystemError('secret_names and plain_names: both list %s' % ', '.join(both))


def _check_environment(environment: Dict[Any, Any]) -> Dict[str, str]:
    checked = {}
    for name, value in environment.items():
        if not isinstance(name, str) or not ENV_KEY_RE.match(name):
            raise EcosystemError('environment: %r is not an environment variable name' % (name,))
        if name.startswith('NODE_') and name != 'NODE_ENV':
            raise EcosystemError('environment.%s: refused: NODE_* variables (but NODE_ENV) change how node runs the sandbox' % name)
        if value is None or isinstance(value, (dict, list)):
            raise EcosystemError('environment.%s: must be a string, number or boolean (got %s)' % (name, kind_of(value)))
        checked[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return checked


def check_options(params: Dict[str, Any]) -> Dict[str, Any]:
    """Check pm2_import's options before anything is read or written; raise EcosystemError naming the option.

    Returns the options with `health` and `environment` normalised. Paths are expected absolute.
    """
    checked = dict(params)
    _check_paths(params)
    _check_identity(params)
    if params.get('health') is not None:
        checked['health'] = check_health(params['health'])
    _check_name_lists(params)
    if not params['node_executable'] or not params['node_executable'].strip():
        raise EcosystemError('node_executable: must name the node binary')
    if not 1 <= params['timeout'] <= MAX_TIMEOUT:
        raise EcosystemError('timeout: must be from 1 to %d seconds' % MAX_TIMEOUT)
    checked['environment'] = _check_environment(params['environment'])
    return checked
