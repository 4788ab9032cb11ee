# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_import's mapping (pure): an evaluated ecosystem object -> ``pm2_deploy_apps`` / ``pm2_env_apps`` /
``pm2_logrotate_apps`` (_import_logs) data, one group per ``env_*`` block, secret-looking env values moved out, every
key it cannot map listed. Which keys it maps and as what comes from the option table (_options.OPTIONS). Bad content
is an EcosystemError that names the app (by name, never apps[N]) and the key, and never quotes a value."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import EcosystemError
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_env import group_name, map_env
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_logs import LOGROTATE_KEYS, logrotate_entry, logrotate_value
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_secrets import looks_secret
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_values import convert, display, kind_of, pm2_defaults
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import OPTIONS, name_problem

Plan = Dict[str, Any]

# pm2_app app options an ecosystem app may set (the others are this collection's own controls).
SUPPORTED = tuple(o.name for o in OPTIONS if o.imported)
# Top level of a pm2_deploy_apps item; every other supported option goes under its `pm2:` dict.
DEPLOY_TOP = ('name', 'script', 'exec_mode', 'instances')

# PM2's own aliases (lib/API/schema.json), mapped to the canonical option.
ALIASES = {
    'exec_interpreter': 'interpreter',
    'interpreter_args': 'node_args',
    'node_args': 'node_args',
    'cron': 'cron_restart',
    'combine_logs': 'merge_logs',
    'output': 'out_file',
    'out': 'out_file',
    'out_log': 'out_file',
    'error': 'error_file',
    'err': 'error_file',
    'err_file': 'error_file',
    'err_log': 'error_file',
    'log': 'log_file',
    'mode': 'exec_mode',
    'cwd': 'cwd',
}

# PM2 options the collection does not manage (reported, with this hint).
PM2_UNSUPPORTED = (
    'instance_var', 'treekill', 'filter_env', 'source_map_support', 'vizion', 'increment_var', 'shutdown_with_message',
    'stop_exit_codes', 'port', 'pid_file', 'pid', 'disable_logs', 'append_env_to_name', 'force', 'autostart', 'max',
    'uid', 'gid', 'user', 'username', 'post_update', 'disable_trace', 'trace', 'pmx', 'automation', 'deep_monitoring',
    'wait_ready_timeout', 'windowsHide', 'kill_retry_time', 'max_memory_restart_check', 'cron_restart_delay',
    'exec_mode_args', 'listen_address', 'container', 'dist', 'docker', 'io', 'version', 'namespace_pattern',
)
HINTS = {
    'env_file': 'not a PM2 option (PM2 ignores it): put the variables of that file into pm2_env_apps[].vars or, for secrets, '
                'pm2_env_apps[].secrets (nodefleet.pm2.pm2_env renders the env file from inventory and ansible-vault)',
    'deploy': 'PM2 deploy section: use the nodefleet.pm2.pm2_deploy role (nodefleet.pm2.deploy playbook) instead',
    'user': 'the OS user comes from pm2_deploy_user (nodefleet.pm2.pm2_runtime creates it)',
    'uid': 'the OS user comes from pm2_deploy_user (nodefleet.pm2.pm2_runtime creates it)',
}
COMMAND_RE = re.compile(r'^[A-Za-z0-9_-]+$')


# ---------------------------------------------------------------------------------------------------------------
# Names

def normalise_app_name(name: Any) -> str:
    """A name pm2_app accepts (_options.name_problem): lower case, dashes for anything else, dots too where PM2 would
    read the name as a file, and an app- prefix for a number or `all`."""
    new = re.sub(r'[^a-z0-9.-]+', '-', str(name).lower()).strip('-.')
    if name_problem(new) and '.' in new:
        new = new.replace('.', '-')
    new = re.sub(r'-{2,}', '-', new)[:100]
    if not new or new.isdigit() or new == 'all':
        new = ('app-' + (new or 'unnamed'))[:100]
    return new


# ---------------------------------------------------------------------------------------------------------------
# Apps

def _apps_of(config: Any) -> Tuple[List[Any], Dict[str, Any]]:
    if isinstance(config, list):
        apps, top = config, {}
    elif isinstance(config, dict):
        apps = config.get('apps')
        if apps is None and ('script' in config or 'name' in config):
            apps, top = [config], {}
        else:
            if isinstance(apps, dict):
                apps = [apps]
            if not isinstance(apps, list):
                raise EcosystemError('apps: the ecosystem file defines no "apps" list (got %s)' % (
                    'nothing' if apps is None else kind_of(apps)))
            top = {k: v for k, v in config.items() if k != 'apps'}
    else:
        raise EcosystemError('the ecosystem file must export an object with an "apps" list (got %s)' % kind_of(config))
    if not apps:
        raise EcosystemError('apps: the list is empty; the ecosystem file defines no app')
    return apps, top


def _ordinal(index: int) -> str:
    number = index + 1
    suffix = 'th' if 10 <= number % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(number % 10, 'th')
    return '%d%s' % (number, suffix)


def _label(raw: Dict[str, Any], index: int) -> str:
    """How an error names an app of the file: its name, else its script, else its position."""
    name = raw.get('name')
    if isinstance(name, (str, int)) and not isinstance(name, bool) and str(name) != '':
        return 'app %s' % name
    script = raw.get('script')
    if isinstance(script, str) and script:
        return 'the app with script %s (no name)' % script
    return 'the %s app (no name)' % _ordinal(index)


def _app_name(index: int, raw: Any, plan: Plan) -> Tuple[str, str]:
    """(name for pm2_app, name in the file)."""
    if not isinstance(raw, dict):
        raise EcosystemError('apps: the %s entry is not an app object (got %s)' % (_ordinal(index), kind_of(raw)))
    label = _label(raw, index)
    orig_name = raw.get('name')
    if orig_name is None or orig_name == '':
        script = raw.get('script')
        if not isinstance(script, str) or not script:
            raise EcosystemError('%s: has neither name nor script' % label)
        orig_name = os.path.splitext(os.path.basename(script))[0]
        plan['notes'].append('%s has no name; PM2 would call it %s after its script' % (label, orig_name))
    if not isinstance(orig_name, (str, int)) or isinstance(orig_name, bool):
        raise EcosystemError('%s: name must be a string (got %s)' % (label, kind_of(orig_name)))
    orig_name = str(orig_name)
    name = normalise_app_name(orig_name)
    if name != orig_name:
        plan['renamed'].append({'from': orig_name, 'to': name})
    return name, orig_name


def _unmapped(name: str, key: str, value: Any) -> Dict[str, Any]:
    entry = {'app': name, 'key': key}
    if key in HINTS:
        entry['reason'] = HINTS[key]
    elif key in PM2_UNSUPPORTED:
        entry['reason'] = 'PM2 option not managed by nodefleet.pm2.pm2_app'
    else:
        entry['reason'] = 'not a PM2 option known to the importer'
    shown = None if looks_secret(key, value) else display(value)
    if shown is not None:
        entry['value'] = shown
    return entry


def _take_field(name: str, key: str, value: Any, fields: Dict[str, Any], plan: Plan) -> None:
    """One supported key into fields (its canonical name), with notes on what the import did to it."""
    canonical = ALIASES.get(key, key)
    if canonical in fields:
        plan['notes'].append('%s: %s given twice (as %s); the last one wins' % (name, canonical, key))
    try:
        fields[canonical] = convert(canonical, value)
    except ValueError as exc:
        raise EcosystemError('app %s: %s: %s (got %s)' % (name, key, exc, kind_of(value)))
    if canonical != key:
        plan['notes'].append('%s: %s imported as %s' % (name, key, canonical))
    if canonical in ('args', 'node_args') and isinstance(value, str):
        plan['notes'].append('%s: %s string split into a list (shell words)' % (name, key))
    if canonical in ('out_file', 'error_file', 'log_file') and fields[canonical] == 'NULL':
        fields[canonical] = '/dev/null'  # the same for PM2; pm2_app would take NULL for a file name
    if isinstance(fields[canonical], str) and canonical not in ('script', 'cwd') and looks_secret(canonical, fields[canonical]):
        plan['notes'].append('%s: %s looks like it holds a secret; it is kept as is, move it out of the ecosystem file' % (name, canonical))


def _take_logrotate(name: str, key: str, value: Any, logs: Dict[str, Any]) -> None:
    try:
        logs[LOGROTATE_KEYS[key]] = logrotate_value(key, value)
    except ValueError as exc:
        raise EcosystemError('app %s: %s: %s' % (name, key, exc))


def _sort_keys(name: str, raw: Dict[str, Any], plan: Plan) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]], Dict[str, Any]]:
    """(supported fields, env blocks, log rotation settings) of one app; every other key goes to plan['unmapped']."""
    fields: Dict[str, Any] = {}
    env_blocks = {}
    logs: Dict[str, Any] = {}
    for key, value in raw.items():
        if key == 'name':
            continue
        if key == 'env' or key.startswith('env_') and key != 'env_file':
            if not isinstance(value, dict):
                raise EcosystemError('app %s: %s must be an object of environment variables (got %s)' % (name, key, kind_of(value)))
            env_blocks[key] = value
        elif key in LOGROTATE_KEYS:
            _take_logrotate(name, key, value, logs)
        elif ALIASES.get(key, key) == 'log_file' and isinstance(value, bool):
            # PM2's `log: true` is a combined log in its default place (<PM2_HOME>/logs/<name>.log); false is none.
            if value:
                plan['unmapped'].append(dict(app=name, key=key, value='true', reason='a combined log in PM2\'s default place is not '
                                             'supported by nodefleet.pm2.pm2_app: give log_file a path'))
        elif ALIASES.get(key, key) in SUPPORTED:
            _take_field(name, key, value, fields, plan)
        else:
            plan['unmapped'].append(_unmapped(name, key, value))
    return fields, env_blocks, logs


def _release_cwd(name: str, cwd: Optional[str], plan: Plan) -> str:
    """The app's cwd relative to the release ('' for the release itself)."""
    if not cwd:
        return ''
    if os.path.isabs(cwd):
        plan['notes'].append('%s: absolute cwd %s replaced by the release directory (pm2_deploy_to/current)' % (name, cwd))
        return ''
    rel_cwd = os.path.normpath(cwd)
    if rel_cwd == '..' or rel_cwd.startswith('../'):
        raise EcosystemError('app %s: cwd %s leaves the project directory (the release)' % (name, cwd))
    return '' if rel_cwd == '.' else rel_cwd


def _place_script(name: str, script: str, rel_cwd: str, item: Dict[str, Any], pm2: Dict[str, Any], plan: Plan) -> None:
    if COMMAND_RE.match(script) and '.' not in script:
        # A command from PATH (npm, pnpm, yarn): the deploy role would make it relative to the release.
        item['script'] = pm2['script'] = script
        plan['notes'].append('%s: script %s is a command from PATH, not a file of the release' % (name, script))
    elif os.path.isabs(script):
        item['script'] = pm2['script'] = script
        plan['notes'].append('%s: absolute script %s kept; the release directory is not used for it' % (name, script))
    else:
        item['script'] = os.path.normpath(os.path.join(rel_cwd, script))
        if item['script'] == '..' or item['script'].startswith('../'):
            raise EcosystemError('app %s: script %s leaves the project directory (the release)' % (name, script))


def _map_app(name: str, raw: Dict[str, Any], plan: Plan) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """(pm2_deploy_apps item, its pm2: dict, env blocks, log rotation settings with the app's rel_cwd)."""
    item: Dict[str, Any] = {'name': name}
    pm2: Dict[str, Any] = {}
    fields, env_blocks, logs = _sort_keys(name, raw, plan)
    script = fields.pop('script', None)
    if not script:
        raise EcosystemError('app %s: script is missing' % name)
    rel_cwd = _release_cwd(name, fields.pop('cwd', None), plan)
    _place_script(name, script, rel_cwd, item, pm2, plan)
    if rel_cwd:
        pm2['cwd'] = '{{ pm2_deploy_to }}/current/' + rel_cwd
    for key in DEPLOY_TOP[2:]:
        if key in fields:
            item[key] = fields.pop(key)
    pm2_defaults(name, script, item, fields, plan)
    for key in sorted(fields):
        pm2[key] = fields[key]
    logs['rel_cwd'] = rel_cwd
    return item, pm2, env_blocks, logs


# ---------------------------------------------------------------------------------------------------------------
# Health

def _port_of(env_blocks: Dict[str, Dict[str, Any]]) -> Optional[int]:
    ports = {str(block['PORT']) for block in env_blocks.values() if isinstance(block, dict) and isinstance(block.get('PORT'), (int, str))
             and str(block.get('PORT')).isdigit()}
    if len(ports) == 1:
        return int(ports.pop())
    base = env_blocks.get('env')
    if isinstance(base, dict) and str(base.get('PORT', '')).isdigit():
        return int(base['PORT'])
    return None


def _health(name: str, env_blocks: Dict[str, Dict[str, Any]], health: Optional[Dict[str, Any]], plan: Plan) -> Dict[str, Any]:
    if health:
        return dict(health)
    port = _port_of(env_blocks)
    if port is not None:
        plan['notes'].append('%s: health check http://127.0.0.1:%s/health assumed; adjust pm2_deploy_apps[].health' % (name, port))
        return {'port': port, 'path': '/health'}
    plan['notes'].append('%s: no PORT in its env, so no health check (command: true); set pm2_deploy_apps[].health' % name)
    return {'command': 'true'}


# ---------------------------------------------------------------------------------------------------------------
# The whole file

def _all_groups(mapped: List[Tuple[Any, ...]]) -> List[str]:
    """The inventory groups of every env_* block of the file; env_all is refused naming its apps."""
    groups_of = {name: {group_name(key[4:]) for key in env_blocks if key != 'env'} for name, _item, _pm2, env_blocks, _logs in mapped}
    culprits = [name for name, _item, _pm2, _env_blocks, _logs in mapped if 'all' in groups_of[name]]
    if culprits:
        raise EcosystemError('app %s: an env block named env_all would clash with the base env (group all); rename it' % ', '.join(culprits))
    return sorted(set().union(*groups_of.values()))


def plan_import(config: Any, health: Optional[Dict[str, Any]] = None, secret_names: Iterable[str] = (),
                plain_names: Iterable[str] = (), source: str = '', notes: Iterable[str] = ()) -> Plan:
    """Map an evaluated ecosystem object to inventory data. Pure; raises EcosystemError naming the app and field.

    Returns a dict:
      deploy_apps: list of pm2_deploy_apps items
      groups: {group: {app: {'vars': {...}, 'secrets': {KEY: var}}}} ('all' is the base env)
      vault: {group: {var: value}} secret values (only the caller may see them)
      logrotate: list of pm2_logrotate_apps items (the apps' log files under the pm2_deploy layout)
      unmapped: [{app, key, reason, value?}], secrets: [{app, key, var, reason, blocks}], renamed: [{from, to}],
      notes: [str] (starting with `notes`, what the evaluation of the file reported)
    """
    apps, top = _apps_of(config)
    plan: Plan = dict(deploy_apps=[], groups={'all': {}}, vault={'all': {}}, logrotate=[], unmapped=[], secrets=[], renamed=[],
                      notes=list(notes), source=source)
    for key in sorted(top):
        plan['unmapped'].append(dict(app=None, key=key, reason=HINTS.get(key, 'unknown top-level key of the ecosystem file')))
    seen: Dict[str, str] = {}
    mapped = []
    for index, raw in enumerate(apps):
        name, orig_name = _app_name(index, raw, plan)
        if name in seen:
            raise EcosystemError('apps %s and %s both map to the app name %s; rename one' % (seen[name], orig_name, name))
        seen[name] = orig_name
        mapped.append((name,) + _map_app(name, raw, plan))
    all_groups = _all_groups(mapped)
    log_owners: Dict[str, str] = {}
    for name, item, pm2, env_blocks, logs in mapped:
        map_env(name, item, pm2, env_blocks, all_groups, plan, secret_names, plain_names)
        item['health'] = _health(name, env_blocks, health, plan)
        if pm2:
            item['pm2'] = pm2
        plan['deploy_apps'].append(item)
        rotation = logrotate_entry(name, pm2, logs, log_owners, plan)
        if rotation:
            plan['logrotate'].append(rotation)
    return plan
