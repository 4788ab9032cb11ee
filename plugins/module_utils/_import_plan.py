# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_import's mapping (pure): an evaluated ecosystem object -> ``pm2_deploy_apps`` / ``pm2_env_apps`` data, one
group per ``env_*`` block, secret-looking env values moved out, every key it cannot map listed. Which keys it maps
and as what comes from the option table (_options.OPTIONS)."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import EcosystemError
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_secrets import looks_secret
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_values import convert, display, pm2_defaults
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import OPTIONS, name_problem
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import ENV_KEY_RE, NODE_INTERPRETERS

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
    'log_file_max_size': 'not a PM2 option (PM2 ignores it): rotate logs with the nodefleet.pm2.pm2_logrotate role',
    'log_file_max_files': 'not a PM2 option (PM2 ignores it): rotate logs with the nodefleet.pm2.pm2_logrotate role',
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


def group_name(block: str) -> str:
    """Inventory group of an env_<block> (env_production -> production)."""
    new = re.sub(r'[^a-z0-9_]+', '_', block.lower()).strip('_')
    if not new or new[0].isdigit():
        new = 'env_' + new
    return new


def vault_var(app: str, key: str) -> str:
    return 'vault_%s_%s' % (re.sub(r'[^a-z0-9]+', '_', app.lower()).strip('_'), re.sub(r'[^a-z0-9]+', '_', key.lower()).strip('_'))


# ---------------------------------------------------------------------------------------------------------------
# Apps

def _apps_of(config: Any) -> Tuple[List[Any], Dict[str, Any]]:
    if isinstance(config, list):
        return config, {}
    if isinstance(config, dict):
        apps = config.get('apps')
        if apps is None and ('script' in config or 'name' in config):
            return [config], {}
        if isinstance(apps, dict):
            apps = [apps]
        if not isinstance(apps, list):
            raise EcosystemError('the ecosystem file defines no "apps" list')
        return apps, {k: v for k, v in config.items() if k != 'apps'}
    raise EcosystemError('the ecosystem file must export an object with an "apps" list (got %s)' % type(config).__name__)


def _app_name(index: int, raw: Any, plan: Plan) -> str:
    if not isinstance(raw, dict):
        raise EcosystemError('apps[%d] is not an object' % index)
    orig_name = raw.get('name')
    if orig_name is None or orig_name == '':
        script = raw.get('script')
        if not isinstance(script, str) or not script:
            raise EcosystemError('apps[%d] has neither name nor script' % index)
        orig_name = os.path.splitext(os.path.basename(script))[0]
        plan['notes'].append('apps[%d] has no name; PM2 would call it %s after its script' % (index, orig_name))
    if not isinstance(orig_name, (str, int)):
        raise EcosystemError('apps[%d].name is not a string' % index)
    orig_name = str(orig_name)
    name = normalise_app_name(orig_name)
    if name != orig_name:
        plan['renamed'].append({'from': orig_name, 'to': name})
    return name


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
        plan['unmapped'].append(dict(app=name, key=key, reason='cannot convert: %s' % exc))
        return
    if canonical != key:
        plan['notes'].append('%s: %s imported as %s' % (name, key, canonical))
    if canonical in ('args', 'node_args') and isinstance(value, str):
        plan['notes'].append('%s: %s string split into a list (shell words)' % (name, key))
    if isinstance(fields[canonical], str) and canonical not in ('script', 'cwd') and looks_secret(canonical, fields[canonical]):
        plan['notes'].append('%s: %s looks like it holds a secret; it is kept as is, move it out of the ecosystem file' % (name, canonical))


def _sort_keys(name: str, raw: Dict[str, Any], plan: Plan) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """(supported fields, env blocks) of one app; every other key goes to plan['unmapped']."""
    fields: Dict[str, Any] = {}
    env_blocks = {}
    for key, value in raw.items():
        if key == 'name':
            continue
        if key == 'env' or key.startswith('env_') and key != 'env_file':
            if isinstance(value, dict):
                env_blocks[key] = value
            else:
                plan['unmapped'].append(dict(app=name, key=key, reason='an env block must be an object'))
        elif ALIASES.get(key, key) in SUPPORTED:
            _take_field(name, key, value, fields, plan)
        else:
            plan['unmapped'].append(_unmapped(name, key, value))
    return fields, env_blocks


def _release_cwd(name: str, cwd: Optional[str], plan: Plan) -> str:
    """The app's cwd relative to the release ('' for the release itself)."""
    if not cwd:
        return ''
    if os.path.isabs(cwd):
        plan['notes'].append('%s: absolute cwd %s replaced by the release directory (pm2_deploy_to/current)' % (name, cwd))
        return ''
    rel_cwd = os.path.normpath(cwd)
    if rel_cwd.startswith('..'):
        raise EcosystemError('%s: cwd %s leaves the project directory' % (name, cwd))
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


def _map_app(index: int, name: str, raw: Dict[str, Any], plan: Plan) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    item: Dict[str, Any] = {'name': name}
    pm2: Dict[str, Any] = {}
    fields, env_blocks = _sort_keys(name, raw, plan)
    script = fields.pop('script', None)
    if not isinstance(script, str) or not script:
        raise EcosystemError('apps[%d] (%s) has no script' % (index, name))
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
    return item, pm2, env_blocks


# ---------------------------------------------------------------------------------------------------------------
# Env

def _group_blocks(name: str, env_blocks: Dict[str, Dict[str, Any]], all_groups: Iterable[str]) -> Tuple[Dict[str, Dict[str, Any]], set]:
    """Every group lists every app (a group's pm2_env_apps replaces the one of group all): the app's env_<group> block
    merged over its env, as `pm2 start --env <group>` does, or its plain env when it has no such block.
    Returns ({group: env}, the groups the app has a block of)."""
    base = env_blocks.get('env', {})
    own: Dict[str, Dict[str, Any]] = {}
    for key, block in env_blocks.items():
        if key != 'env':
            group = group_name(key[4:])
            if group in own:
                raise EcosystemError('%s: two env blocks map to the same group %s' % (name, group))
            own[group] = block
    blocks = {'all': base}
    for group in all_groups:
        blocks[group] = dict(base)
        blocks[group].update(own.get(group, {}))

    return blocks, set(own)


def _secret_keys(blocks: Dict[str, Dict[str, Any]], secret_names: Iterable[str], plain_names: Iterable[str]) -> Dict[str, str]:
    """A key is secret everywhere when any block's value looks secret (one reference per key): {key: why}."""
    found: Dict[str, str] = {}
    for env in blocks.values():
        for key, value in env.items():
            reason = looks_secret(key, value, secret_names, plain_names)
            if reason and key not in found:
                found[key] = reason
    return found


def _env_entry(name: str, group: str, env: Dict[str, Any], secret_keys: Dict[str, str], plan: Plan) -> Dict[str, Any]:
    """One app's pm2_env_apps entry for one group; secret values go to the group's vault data."""
    entry: Dict[str, Any] = {'name': name, 'user': '{{ pm2_deploy_user }}', 'vars': {}, 'secrets': {}}
    block = 'env' if group == 'all' else 'env_' + group
    for key, value in env.items():
        if not ENV_KEY_RE.match(key) or key.startswith('NODEFLEET_'):
            plan['unmapped'].append(dict(app=name, key='%s.%s' % (block, key),
                                         reason='env name not allowed (^[A-Za-z_][A-Za-z0-9_]*$, prefix NODEFLEET_ reserved)'))
        elif isinstance(value, (dict, list)) or value is None:
            plan['unmapped'].append(dict(app=name, key='%s.%s' % (block, key), reason='env value is not a string, number or boolean'))
        elif key in secret_keys:
            var = vault_var(name, key)
            entry['secrets'][key] = var
            if group == 'all' or plan['vault']['all'].get(var) != value:
                plan['vault'].setdefault(group, {})[var] = value
        else:
            entry['vars'][key] = value
    return entry


def _map_env(name: str, item: Dict[str, Any], pm2: Dict[str, Any], env_blocks: Dict[str, Dict[str, Any]],
             all_groups: List[str], plan: Plan, secret_names: Iterable[str], plain_names: Iterable[str]) -> None:
    blocks, own = _group_blocks(name, env_blocks, all_groups)
    secret_keys = _secret_keys(blocks, secret_names, plain_names)
    for group, env in blocks.items():
        plan['groups'].setdefault(group, {})[name] = _env_entry(name, group, env, secret_keys, plan)
    for key in sorted(secret_keys):
        in_blocks = sorted(g for g, env in blocks.items() if key in env and (g == 'all' or g in own))
        plan['secrets'].append(dict(app=name, key=key, var=vault_var(name, key), reason=secret_keys[key], groups=in_blocks))
    interpreter = pm2.get('interpreter')
    if interpreter is None or os.path.basename(interpreter) in NODE_INTERPRETERS:
        item['env_file'] = True
    else:
        # pm2_app loads env files through a Node.js preload; other interpreters get plain env (visible in pm2 jlist).
        item['env'] = "{{ (pm2_env_apps | selectattr('name', 'equalto', '%s') | first).vars }}" % name
        plan['notes'].append('%s: interpreter %s cannot load an env file; its plain vars are passed as env (visible in pm2 jlist)%s'
                             % (name, interpreter, ' and its secrets are NOT passed' if secret_keys else ''))


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

def plan_import(config: Any, health: Optional[Dict[str, Any]] = None, secret_names: Iterable[str] = (),
                plain_names: Iterable[str] = (), source: str = '') -> Plan:
    """Map an evaluated ecosystem object to inventory data. Pure; raises EcosystemError.

    Returns a dict:
      deploy_apps: list of pm2_deploy_apps items
      groups: {group: {app: {'vars': {...}, 'secrets': {KEY: var}}}} ('all' is the base env)
      vault: {group: {var: value}} secret values (only the caller may see them)
      unmapped: [{app, key, reason, value?}], secrets: [{app, key, var, reason, blocks}], renamed: [{from, to}],
      notes: [str]
    """
    apps, top = _apps_of(config)
    plan: Plan = dict(deploy_apps=[], groups={'all': {}}, vault={'all': {}}, unmapped=[], secrets=[], renamed=[], notes=[],
                      source=source)
    for key in sorted(top):
        plan['unmapped'].append(dict(app=None, key=key, reason=HINTS.get(key, 'unknown top-level key of the ecosystem file')))
    seen: Dict[str, int] = {}
    mapped = []
    for index, raw in enumerate(apps):
        name = _app_name(index, raw, plan)
        if name in seen:
            raise EcosystemError('apps[%d] and apps[%d] both map to the app name %s; rename one' % (seen[name], index, name))
        seen[name] = index
        mapped.append((name,) + _map_app(index, name, raw, plan))
    all_groups = {group_name(key[4:]) for _name, _item, _pm2, env_blocks in mapped for key in env_blocks if key != 'env'}
    if 'all' in all_groups:
        raise EcosystemError('an env_all block would clash with the base env (group all); rename it')
    for name, item, pm2, env_blocks in mapped:
        _map_env(name, item, pm2, env_blocks, sorted(all_groups), plan, secret_names, plain_names)
        item['health'] = _health(name, env_blocks, health, plan)
        if pm2:
            item['pm2'] = pm2
        plan['deploy_apps'].append(item)
    return plan
