# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""One app's options -> the wanted spec, in two steps: ``normalise_app`` (pure: validation and conversion, driven by
the option table) and ``resolve_app`` (the filesystem: a script found in cwd, files that must exist, the real path
of the release, then the fingerprint). ``prepare_app`` runs both.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Dict, List, Optional

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._health import normalise_health
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import (
    BY_NAME,
    OPTIONS,
    PM2_FIELDS,
    validate_name,
)

Spec = Dict[str, Any]

ENV_KEY_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
NODE_INTERPRETERS = ('node', 'nodejs')
# A crash 2 s after start still shows 'online' between restarts (pm2-behaviour.md §10): watch longer than that.
DEFAULT_SETTLE_MS = 3000
DEFAULT_READY_TIMEOUT = 60
# More processes than this for one app is a typo (1000000 was planned once), unless the host has more CPUs.
MAX_INSTANCES = 128

_MEMORY_RE = re.compile(r'^(\d+(?:\.\d+)?)\s*([KMG]?)B?$', re.IGNORECASE)
_DURATION_RE = re.compile(r'^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$', re.IGNORECASE)
_DURATION_MS = {'': 1, 'ms': 1, 's': 1000, 'm': 60000, 'h': 3600000}


# --------------------------------------------------------------------------- value parsers

def parse_memory(value: Any) -> int:
    """'500M' / '1G' / '300K' / bytes -> bytes (PM2 counts 1K as 1024)."""
    if isinstance(value, bool):
        raise SpecError('max_memory_restart', 'expected bytes or a size like 500M, got %r' % (value,))
    if isinstance(value, int):
        number = value
    else:
        match = _MEMORY_RE.match(str(value).strip())
        if not match:
            raise SpecError('max_memory_restart', 'expected bytes or a size like 500M, 1G, 300K, got %r' % (value,))
        number = int(float(match.group(1)) * 1024 ** ' KMG'.index(match.group(2).upper() or ' '))
    if number <= 0:
        raise SpecError('max_memory_restart', 'must be positive')
    return number


def parse_duration_ms(field: str, value: Any) -> int:
    """int ms or '10s' / '500ms' / '1m' -> int ms."""
    if isinstance(value, bool):
        raise SpecError(field, 'expected milliseconds or a duration like 10s, got %r' % (value,))
    if isinstance(value, int):
        if value < 0:
            raise SpecError(field, 'must not be negative')
        return value
    match = _DURATION_RE.match(str(value).strip())
    if not match:
        raise SpecError(field, 'expected milliseconds or a duration like 10s, 500ms, 1m, got %r' % (value,))
    return int(float(match.group(1)) * _DURATION_MS[(match.group(2) or '').lower()])


def resolve_instances(value: Any, cpu_count: int) -> int:
    """int >= 1, 'max' (all CPUs) or a negative int (all CPUs but N, at least 1) -> process count."""
    if value is None:
        return 1
    text = str(value).strip().lower()
    if isinstance(value, bool) or not (text == 'max' or re.match(r'^-?\d+$', text)):
        raise SpecError('instances', 'expected a positive number, max, or a negative number, got %r' % (value,))
    number = cpu_count if text == 'max' else int(text)
    if number == 0:
        raise SpecError('instances', 'must not be 0 (use a positive count, max, or -N for all CPUs but N)')
    if number < 0:
        number = cpu_count + number
    limit = max(MAX_INSTANCES, cpu_count)
    if number > limit:
        raise SpecError('instances', '%d processes is more than the limit of %d (%d, or the number of CPUs when that is more)'
                        % (number, limit, MAX_INSTANCES))
    return max(1, number)


def _str_list(field: str, value: Any) -> Optional[List[str]]:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(field, 'expected a list of strings')
    return list(value)


def _abs_path(field: str, path: Optional[str], cwd: Optional[str]) -> Optional[str]:
    if path is None or os.path.isabs(path):
        return path
    if cwd is None:
        raise SpecError(field, '%r is relative; give an absolute path or set cwd' % path)
    return os.path.normpath(os.path.join(cwd, path))


def _convert(field: str, value: Any, cwd: Optional[str]) -> Any:
    """One PM2 option's value as PM2 gets it (the table's kind says how)."""
    if value is None:
        return None
    kind = BY_NAME[field].kind
    if kind == 'list':
        return _str_list(field, value)
    if kind == 'watch':
        return value if isinstance(value, bool) else _str_list(field, value)
    if kind == 'size':
        return parse_memory(value)
    if kind == 'duration':
        return parse_duration_ms(field, value)
    if kind == 'path' and field != 'cwd':
        return _abs_path(field, value, cwd)
    if kind == 'int' and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise SpecError(field, 'must be a non-negative integer')
    if kind == 'choice' and value not in BY_NAME[field].choices:
        raise SpecError(field, 'must be one of %s' % ', '.join(BY_NAME[field].choices))
    return value


def _env_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (str, int, float)):
        return str(value)
    raise SpecError('env', 'value of %s must be a string or number' % key)


def _env(values: Optional[Dict[str, Any]]) -> Dict[str, str]:
    env = {}
    for key, value in (values or {}).items():
        if not ENV_KEY_RE.match(str(key)):
            raise SpecError('env', 'invalid variable name %r (must match ^[A-Za-z_][A-Za-z0-9_]*$)' % (key,))
        if key.startswith('NODEFLEET_'):
            raise SpecError('env', '%s: the NODEFLEET_ prefix is reserved' % key)
        env[key] = _env_value(key, value)
    return env


def is_node(interpreter: Optional[str]) -> bool:
    return interpreter is None or os.path.basename(interpreter) in NODE_INTERPRETERS


# --------------------------------------------------------------------------- step 1: pure normalisation

def _controls(params: Dict[str, Any]) -> Spec:
    """What every form has: name, state, supervisor and the readiness bounds."""
    spec = {'name': validate_name(params.get('name'))}
    for field in ('state', 'supervisor'):
        spec[field] = _convert(field, params.get(field) or BY_NAME[field].default, None)
    for field in ('settle_time', 'ready_timeout'):
        _convert(field, params.get(field), None)
    spec['ready_timeout'] = params.get('ready_timeout') or DEFAULT_READY_TIMEOUT
    spec['health'] = normalise_health(params.get('health'))
    return spec


def _pm2_options(params: Dict[str, Any], name: str) -> Dict[str, Any]:
    cwd = params.get('cwd')
    if cwd is not None and not os.path.isabs(cwd):
        raise SpecError('cwd', 'must be an absolute path')
    pm2 = {field: _convert(field, params.get(field), cwd) for field in PM2_FIELDS}
    pm2['exec_mode'] = pm2['exec_mode'] or 'fork'
    if '/' in pm2['script']:
        pm2['script'] = _abs_path('script', pm2['script'], cwd)
    if pm2['exec_mode'] == 'cluster' and not is_node(pm2['interpreter']):
        raise SpecError('interpreter', 'cluster mode runs Node.js only, got interpreter %r' % pm2['interpreter'])
    namespace = pm2['namespace']
    if namespace is not None and (not namespace or namespace == name):
        raise SpecError('namespace', 'must be non-empty and differ from the app name')
    return pm2


def normalise_app(params: Dict[str, Any], cpu_count: int) -> Spec:
    """Validate one app's options and convert them (no filesystem access, no env-file content)."""
    spec = _controls(params)
    if params.get('script') is None:
        # Name-only form: act on an existing app by name, without managing its configuration.
        for option in OPTIONS:
            if not option.by_name and params.get(option.name) is not None:
                raise SpecError(option.name, 'needs script; without script the app is only acted on by name')
        settle = params.get('settle_time')
        spec.update(managed=False, settle_time=DEFAULT_SETTLE_MS if settle is None else settle)

        return spec
    pm2 = _pm2_options(params, spec['name'])
    env_file = _abs_path('env_file', params.get('env_file'), pm2['cwd'])
    if env_file is not None and spec['supervisor'] == 'pm2' and not is_node(pm2['interpreter']):
        raise SpecError('env_file', 'is loaded by a Node.js preload and needs a Node.js interpreter, got %r' % pm2['interpreter'])
    settle = params.get('settle_time')
    spec.update(
        managed=True,
        pm2=pm2,
        env=_env(params.get('env')),
        env_file=env_file,
        instances=resolve_instances(params.get('instances'), cpu_count),
        release_path=params.get('release_path') or pm2['cwd'] or os.path.dirname(pm2['script']) or None,
        settle_time=max(pm2['min_uptime'] or 0, DEFAULT_SETTLE_MS) if settle is None else settle,
    )
    return spec


# --------------------------------------------------------------------------- step 2: the filesystem

def resolve_app(spec: Spec) -> Spec:
    """Where the files are: a bare script name found in cwd becomes its path; what must exist does (unless the
    app is to be removed); the release is the real path of release_path. Then the fingerprint of the result."""
    if not spec['managed']:
        return spec
    pm2 = spec['pm2']
    cwd, script = pm2['cwd'], pm2['script']
    if '/' not in script and cwd and os.path.exists(os.path.join(cwd, script)):
        pm2['script'] = script = os.path.normpath(os.path.join(cwd, script))
    if spec['state'] != 'absent':
        if cwd is not None and not os.path.isdir(cwd):
            raise SpecError('cwd', '%s is not a directory' % cwd)
        if os.path.isabs(script) and not os.path.exists(script):
            raise SpecError('script', '%s does not exist' % script)
        if spec['env_file'] is not None and not os.path.isfile(spec['env_file']):
            raise SpecError('env_file', '%s does not exist or is not a file' % spec['env_file'])
    release_path = spec.pop('release_path')
    spec['release'] = os.path.realpath(release_path) if release_path and os.path.isabs(release_path) else None
    spec['fingerprint'] = fingerprint_of(spec)
    return spec


def prepare_app(params: Dict[str, Any], cpu_count: int) -> Spec:
    return resolve_app(normalise_app(params, cpu_count))


# --------------------------------------------------------------------------- fingerprint

def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode('utf-8')).hexdigest()[:10]


def fingerprint_of(spec: Spec) -> Dict[str, str]:
    """field=hash of every PM2 option set and every env variable: changes are named without storing values."""
    fingerprint = {field: _digest(value) for field, value in spec['pm2'].items() if value is not None}
    fingerprint.update(('env.%s' % key, _digest(value)) for key, value in spec['env'].items())
    if spec['env_file'] is not None:
        fingerprint['env_file'] = _digest(spec['env_file'])
    return fingerprint


def format_fingerprint(fingerprint: Dict[str, str]) -> str:
    return ','.join('%s=%s' % item for item in sorted(fingerprint.items()))


def read_fingerprint(text: Optional[str]) -> Dict[str, str]:
    result = {}
    for item in (text or '').split(','):
        key, sep, value = item.partition('=')
        if sep:
            result[key] = value
    return result
