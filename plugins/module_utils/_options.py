# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The app options of pm2_app, each once: how it is given, how PM2 takes it, what systemd does with it, whether
pm2_import maps it. The argument specs, the normaliser, the systemd checks and the importer all read this table;
adding an option is one row here plus its DOCUMENTATION in plugins/modules/pm2_app.py.

Also the one rule for app names (``validate_name``), shared by every module and the importer.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._health import HEALTH_ARGSPEC

STATES = ('present', 'started', 'stopped', 'restarted', 'reloaded', 'absent')
SUPERVISORS = ('pm2', 'systemd')
EXEC_MODES = ('fork', 'cluster')

# App names: lower case letters, digits, dots and dashes, starting with a letter or digit (so never an option,
# a path or a regex to PM2), not purely numeric (a pm_id), not `all`, and nothing PM2 reads as a file: its CLI
# treats any argument *containing* one of CONFIG_FILE_MARKS as an ecosystem file (lib/Common.js isConfigFile),
# and `pm2 start` runs a name ending in a script extension as that script.
NAME_PATTERN = '^[a-z0-9][a-z0-9.-]*$'
NAME_RE = re.compile(NAME_PATTERN)
NAME_MAX = 100
CONFIG_FILE_MARKS = ('.json', '.yml', '.yaml', '.config.js', '.config.cjs', '.config.mjs')
SCRIPT_ENDINGS = ('.js', '.cjs', '.mjs')


def name_problem(name: Any) -> Optional[str]:
    """Why PM2 could read ``name`` as something else than one app's name, or None for a safe name."""
    if not isinstance(name, str) or not name:
        return 'is required'
    if len(name) > NAME_MAX:
        return 'must be at most %d characters' % NAME_MAX
    if not NAME_RE.match(name) or name.isdigit() or name == 'all':
        return '%r must match %s, must not be purely numeric and not "all"' % (name, NAME_PATTERN)
    mark = next((m for m in CONFIG_FILE_MARKS if m in name), None) or next((e for e in SCRIPT_ENDINGS if name.endswith(e)), None)
    if mark:
        return '%r contains %s, so PM2 would read it as a file (an ecosystem file or a script), not as an app name' % (name, mark)
    return None


def validate_name(name: Any) -> str:
    problem = name_problem(name)
    if problem:
        raise SpecError('name', problem)
    return name


class AppOption:
    """One app option.

    kind: str, path, int, bool, list (of str), dict, choice, or a value PM2 parses itself: instances, watch, size,
    duration (raw in the argument spec); health (a dict, _health.HEALTH_ARGSPEC).
    pm2: handed to PM2 in the ecosystem file and recorded (hashed) in the app's fingerprint; the others are this
    collection's own controls.
    systemd: 'ok', 'ignored' (accepted and reported: PM2's own logging and ready signal) or why it is refused;
    refused_values limits a refusal to those values (None: any value set).
    imported: pm2_import maps the key from an ecosystem file.
    by_name: allowed in the name-only form (no script: act on an existing app by name).
    """

    def __init__(self, name: str, kind: str, pm2: bool = False, systemd: str = 'ok', imported: bool = True,
                 by_name: bool = False, choices: Tuple[str, ...] = (), default: Any = None,
                 refused_values: Optional[Tuple[Any, ...]] = None, not_secret: bool = False) -> None:
        self.name = name
        self.kind = kind
        self.pm2 = pm2
        self.systemd = systemd
        self.imported = imported
        self.by_name = by_name
        self.choices = choices
        self.default = default
        self.refused_values = refused_values
        self.not_secret = not_secret

    def argument_spec(self) -> Dict[str, Any]:
        spec = dict(_ARGSPEC_TYPES[self.kind])
        if self.choices:
            spec['choices'] = list(self.choices)
        if self.default is not None:
            spec['default'] = self.default
        if self.not_secret:
            spec['no_log'] = False
        return spec

    def systemd_refuses(self, value: Any) -> bool:
        if self.systemd in ('ok', 'ignored'):
            return False
        if self.refused_values is not None:
            return value in self.refused_values
        return value not in (None, False, [])


_ARGSPEC_TYPES = {
    'str': {'type': 'str'}, 'choice': {'type': 'str'}, 'path': {'type': 'path'}, 'int': {'type': 'int'},
    'bool': {'type': 'bool'}, 'list': {'type': 'list', 'elements': 'str'}, 'dict': {'type': 'dict'},
    'instances': {'type': 'raw'}, 'watch': {'type': 'raw'}, 'size': {'type': 'raw'}, 'duration': {'type': 'raw'},
    'health': {'type': 'dict', 'options': HEALTH_ARGSPEC},
}
_WATCH = 'file watching is a PM2 development feature; use PM2 for this app'
_LOGGING = 'ignored'  # journald stamps every line; readiness is active + stays active + the deploy's health check

OPTIONS = (
    AppOption('name', 'str', imported=False, by_name=True),
    AppOption('state', 'choice', imported=False, by_name=True, choices=STATES, default='started'),
    AppOption('supervisor', 'choice', by_name=True, choices=SUPERVISORS, default='pm2'),
    AppOption('script', 'str', pm2=True),
    AppOption('cwd', 'path', pm2=True),
    AppOption('args', 'list', pm2=True),
    AppOption('interpreter', 'str', pm2=True),
    AppOption('node_args', 'list', pm2=True),
    AppOption('instances', 'instances'),
    AppOption('exec_mode', 'choice', pm2=True, by_name=True, choices=EXEC_MODES, default='fork', refused_values=('cluster',),
              systemd='cluster mode needs PM2 (one port shared by N workers); under systemd run fork-mode instances that '
                      'listen with reusePort or on a port per NODE_APP_INSTANCE'),
    AppOption('autorestart', 'bool', pm2=True),
    AppOption('watch', 'watch', pm2=True, systemd=_WATCH),
    AppOption('ignore_watch', 'list', pm2=True, systemd=_WATCH),
    AppOption('watch_delay', 'int', pm2=True, systemd=_WATCH),
    AppOption('max_memory_restart', 'size', pm2=True),
    AppOption('min_uptime', 'duration', pm2=True),
    AppOption('max_restarts', 'int', pm2=True),
    AppOption('restart_delay', 'int', pm2=True),
    AppOption('exp_backoff_restart_delay', 'int', pm2=True,
              systemd='systemd restarts after a fixed restart_delay; remove it or use PM2'),
    AppOption('cron_restart', 'str', pm2=True,
              systemd='PM2 cron restarts have no unit option; use a systemd timer or PM2 for this app'),
    AppOption('kill_timeout', 'int', pm2=True),
    AppOption('wait_ready', 'bool', pm2=True, systemd=_LOGGING),
    AppOption('listen_timeout', 'int', pm2=True, systemd=_LOGGING),
    AppOption('out_file', 'path', pm2=True),
    AppOption('error_file', 'path', pm2=True),
    AppOption('log_file', 'path', pm2=True),
    AppOption('log_date_format', 'str', pm2=True, systemd=_LOGGING),
    AppOption('merge_logs', 'bool', pm2=True, systemd=_LOGGING),
    AppOption('time', 'bool', pm2=True, systemd=_LOGGING),
    AppOption('namespace', 'str', pm2=True, systemd='PM2 namespaces do not exist under systemd; remove it'),
    AppOption('env', 'dict', imported=False, not_secret=True),
    AppOption('env_file', 'path', imported=False, not_secret=True),
    AppOption('release_path', 'path', imported=False),
    AppOption('settle_time', 'int', imported=False, by_name=True),
    AppOption('ready_timeout', 'int', imported=False, by_name=True),
    AppOption('health', 'health', imported=False, by_name=True),
)
BY_NAME = {o.name: o for o in OPTIONS}
PM2_FIELDS = tuple(o.name for o in OPTIONS if o.pm2)
SYSTEMD_IGNORED = tuple(o.name for o in OPTIONS if o.systemd == 'ignored')
SYSTEMD_REFUSED = tuple(sorted(o.name for o in OPTIONS if o.systemd not in ('ok', 'ignored')))

# Which PM2 daemon: shared by every module of the collection (doc fragment nodefleet.pm2._pm2).
SCOPE_ARGSPEC = {
    'executable': {'type': 'path'},
    'pm2_home': {'type': 'path'},
    'user': {'type': 'str'},
}


def app_argument_spec() -> Dict[str, Dict[str, Any]]:
    return {o.name: o.argument_spec() for o in OPTIONS}


def pm2_app_argument_spec() -> Dict[str, Dict[str, Any]]:
    spec = dict(SCOPE_ARGSPEC)
    spec.update(app_argument_spec())
    spec.update(
        apps={'type': 'list', 'elements': 'dict', 'options': app_argument_spec()},
        save={'type': 'bool', 'default': True},
    )
    return spec


def release_info_argument_spec() -> Dict[str, Dict[str, Any]]:
    """pm2_release_info's options, which pm2_release shares (it reports the same before acting)."""
    spec = dict(SCOPE_ARGSPEC)
    spec.update(path={'type': 'path', 'required': True}, project={'type': 'str'}, lock_dir={'type': 'path'})
    return spec


def release_argument_spec() -> Dict[str, Dict[str, Any]]:
    spec = release_info_argument_spec()
    spec.update(
        release={'type': 'str', 'default': ''},
        state={'type': 'str', 'default': 'active', 'choices': ['present', 'active', 'inactive']},
        src={'type': 'path'},
        checksum={'type': 'str'},
        remove_src={'type': 'bool', 'default': True},
        owner={'type': 'str', 'default': 'root'},
        group={'type': 'str'},
        shared_dirs={'type': 'list', 'elements': 'str', 'default': []},
        shared_links={'type': 'dict', 'default': {}},
        apps={'type': 'list', 'elements': 'dict'},
        health={'type': 'list', 'elements': 'dict', 'default': []},
        health_attempts={'type': 'int', 'default': 3},
        health_delay={'type': 'float', 'default': 0.5},
        health_final={'type': 'bool', 'default': False},
        soak={'type': 'int', 'default': 0},
        keep={'type': 'int', 'default': 0},
        restore={'type': 'bool', 'default': False},
        rollback={'type': 'bool', 'default': False},
        run={'type': 'str', 'default': ''},
    )
    return spec


def pm2_info_argument_spec() -> Dict[str, Dict[str, Any]]:
    spec = dict(SCOPE_ARGSPEC)
    spec.update(name={'type': 'str'})
    return spec
