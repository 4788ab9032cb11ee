# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""systemd units of apps: names and paths, the checks of a systemd app's options, the unit renderer and parser.

One template unit per app (``nodefleet-<name>@.service``), one instance per process (``@0`` .. ``@N-1``), so the
instance id reaches the app as NODE_APP_INSTANCE like under PM2.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import NAME_PATTERN, OPTIONS, SYSTEMD_IGNORED
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import format_fingerprint, read_fingerprint

UNIT_DIR = '/etc/systemd/system'
WANTS_DIR = os.path.join(UNIT_DIR, 'multi-user.target.wants')
STATE_DIR = '/var/lib/nodefleet/systemd'
UNIT_PREFIX = 'nodefleet-'
INSTANCE_RE = re.compile(r'^%s(%s)@(\d+)\.service$' % (re.escape(UNIT_PREFIX), NAME_PATTERN.strip('^$')))
HEADER = '# Managed by nodefleet.pm2 (supervisor: systemd) - changes here are overwritten.'
SPEC_LINE = '# nodefleet-spec: '
USER_LINE = '# nodefleet-user: '
SCRIPT_LINE = '# nodefleet-script: '

# PM2 defaults, so an app behaves the same under either supervisor unless told otherwise.
PM2_KILL_TIMEOUT_MS = 1600
PM2_MAX_RESTARTS = 16
PM2_MIN_UPTIME_MS = 1000
SYSTEMD_RESTART_SEC_MS = 100


def template_unit(name: str) -> str:
    return '%s%s@.service' % (UNIT_PREFIX, name)


def instance_unit(name: str, index: int) -> str:
    return '%s%s@%d.service' % (UNIT_PREFIX, name, index)


def unit_path(name: str) -> str:
    return os.path.join(UNIT_DIR, template_unit(name))


def state_path(name: str) -> str:
    return os.path.join(STATE_DIR, '%s.json' % name)


# --------------------------------------------------------------------------- validation

def check_systemd_spec(spec: Dict[str, Any], params: Dict[str, Any]) -> List[str]:
    """Refuse PM2-only options for a systemd app (never silently dropped); returns the names of the options that
    are accepted but ignored (PM2's own log formatting and ready signal)."""
    for option in sorted(OPTIONS, key=lambda o: o.name):
        value = spec['pm2'].get(option.name) if option.name == 'exec_mode' else params.get(option.name)
        if option.systemd_refuses(value):
            raise SpecError(option.name, 'not supported with supervisor systemd: %s' % option.systemd)
    return [field for field in SYSTEMD_IGNORED if params.get(field) not in (None, False)]


# --------------------------------------------------------------------------- rendering

def _quote_word(word: str) -> str:
    """One ExecStart word: double-quoted, with systemd's specifier (%) and variable ($) characters escaped."""
    escaped = word.replace('\\', '\\\\').replace('"', '\\"').replace('%', '%%').replace('$', '$$')
    return '"%s"' % escaped


def _quote_assignment(key: str, value: str) -> str:
    """Environment= "KEY=value" with C escapes (the value may hold spaces, quotes or newlines) and % escaped."""
    text = '%s=%s' % (key, value)
    text = text.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n').replace('%', '%%')
    return '"%s"' % text


def _ms(value: int) -> str:
    return '%dms' % value


def restart_policy(pm2: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """PM2 restart fields -> unit lines. max_restarts crashes each within min_uptime (+ the delay) stop the app,
    as in PM2; crashes further apart restart it forever, as in PM2."""
    restart_sec = pm2['restart_delay'] if pm2['restart_delay'] else SYSTEMD_RESTART_SEC_MS
    max_restarts = PM2_MAX_RESTARTS if pm2['max_restarts'] is None else pm2['max_restarts']
    min_uptime = PM2_MIN_UPTIME_MS if pm2['min_uptime'] is None else pm2['min_uptime']
    burst = max_restarts + 1  # the first start plus max_restarts restarts
    interval = max(1000, burst * (min_uptime + restart_sec))
    unit = ['StartLimitBurst=%d' % burst, 'StartLimitIntervalSec=%s' % _ms(interval)]
    service = [
        'Restart=%s' % ('no' if pm2['autorestart'] is False else 'always'),
        'RestartSec=%s' % _ms(restart_sec),
        # PM2 stops with SIGINT, then SIGKILL after kill_timeout; the app's drain handler works the same here.
        'KillSignal=SIGINT',
        'KillMode=mixed',
        'TimeoutStopSec=%s' % _ms(PM2_KILL_TIMEOUT_MS if pm2['kill_timeout'] is None else pm2['kill_timeout']),
    ]
    if pm2['max_memory_restart']:
        # The kernel kills the app above this (the cgroup's OOM killer) and Restart= brings it back.
        service.append('MemoryMax=%d' % pm2['max_memory_restart'])
    return unit, service


def exec_start(spec: Dict[str, Any], interpreter_path: Optional[str], script_path: str) -> str:
    pm2 = spec['pm2']
    words = []
    if interpreter_path:
        words.append(interpreter_path)
        words.extend(pm2['node_args'] or [])
    words.append(script_path)
    words.extend(pm2['args'] or [])
    return ' '.join(_quote_word(w) for w in words)


def log_lines(pm2: Dict[str, Any]) -> List[str]:
    out = pm2['out_file'] or pm2['log_file']
    err = pm2['error_file'] or pm2['log_file']
    return ['StandardOutput=%s' % ('append:%s' % out if out else 'journal'),
            'StandardError=%s' % ('append:%s' % err if err else 'journal')]


HARDENING = (
    # Hardening that a Node.js server survives: no MemoryDenyWriteExecute (V8's JIT writes executable memory) and no
    # ProtectHome (apps and npm caches often live in the app user's home).
    'NoNewPrivileges=yes',
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    'ProtectSystem=full',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectKernelLogs=yes',
    'ProtectControlGroups=yes',
    'RestrictSUIDSGID=yes',
    'RestrictRealtime=yes',
    'LockPersonality=yes',
    'UMask=0027',
)


def render_unit(spec: Dict[str, Any], user: str, group: str, interpreter_path: Optional[str], script_path: str) -> str:
    """The template unit's full text for a normalised spec; pure (paths resolved by the caller)."""
    pm2 = spec['pm2']
    unit_policy, service_policy = restart_policy(pm2)
    lines = [
        HEADER,
        SPEC_LINE + format_fingerprint(spec['fingerprint']),
        USER_LINE + user,
        SCRIPT_LINE + script_path,
        '[Unit]',
        'Description=%s instance %%i (nodefleet.pm2)' % spec['name'],
        'After=network-online.target',
        'Wants=network-online.target',
    ] + unit_policy + [
        '',
        '[Service]',
        'Type=exec',
        'User=%s' % user,
        'Group=%s' % group,
    ]
    if pm2['cwd']:
        lines.append('WorkingDirectory=%s' % pm2['cwd'])
    lines.append('Environment=NODE_APP_INSTANCE=%i')
    for key in sorted(spec['env']):
        lines.append('Environment=%s' % _quote_assignment(key, spec['env'][key]))
    if spec['env_file']:
        # Read by systemd (as root) at every start; the values never appear in the unit, ps or systemctl show.
        lines.append('EnvironmentFile=%s' % spec['env_file'])
    lines.append('ExecStart=%s' % exec_start(spec, interpreter_path, script_path))
    lines.extend(service_policy)
    lines.extend(log_lines(pm2))
    lines.append('SyslogIdentifier=%s' % spec['name'])
    lines.extend(HARDENING)
    lines.extend(['', '[Install]', 'WantedBy=multi-user.target', ''])
    return '\n'.join(lines)


def parse_unit(text: Optional[str]) -> Dict[str, Any]:
    """What a unit we wrote records and says: fingerprint, user, script, cwd, log files (empty for a foreign file)."""
    found: Dict[str, Any] = {'fingerprint': {}}
    for line in (text or '').splitlines():
        if line.startswith(SPEC_LINE):
            found['fingerprint'] = read_fingerprint(line[len(SPEC_LINE):])
        elif line.startswith(USER_LINE):
            found['user'] = line[len(USER_LINE):]
        elif line.startswith(SCRIPT_LINE):
            found['script'] = line[len(SCRIPT_LINE):]
        elif line.startswith('WorkingDirectory='):
            found['cwd'] = line.partition('=')[2]
        elif line.startswith('StandardError=append:'):
            found['err_log'] = line[len('StandardError=append:'):]
        elif line.startswith('StandardOutput=append:'):
            found['out_log'] = line[len('StandardOutput=append:'):]
    return found
