# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_import: the env blocks of an app (pure) -> its ``pm2_env_apps`` entry per inventory group (one group per
``env_*`` block), secret-looking values moved to the group's vault data under ``vault_<app>_<key>``."""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterable, List, Tuple

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import EcosystemError
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_secrets import looks_secret
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_values import kind_of
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import ENV_KEY_RE, NODE_INTERPRETERS

Plan = Dict[str, Any]


def group_name(block: str) -> str:
    """Inventory group of an env_<block> (env_production -> production)."""
    new = re.sub(r'[^a-z0-9_]+', '_', block.lower()).strip('_')
    if not new or new[0].isdigit():
        new = 'env_' + new
    return new


def vault_var(app: str, key: str) -> str:
    return 'vault_%s_%s' % (re.sub(r'[^a-z0-9]+', '_', app.lower()).strip('_'), re.sub(r'[^a-z0-9]+', '_', key.lower()).strip('_'))


def _bad_env_names(name: str, env_blocks: Dict[str, Dict[str, Any]], plan: Plan) -> set:
    """Names pm2_env cannot set (listed as unmapped, once per block); a value that is not a scalar is an error."""
    bad = set()
    for block_key, block in env_blocks.items():
        for key, value in block.items():
            if value is None or isinstance(value, (dict, list)):
                raise EcosystemError('app %s: %s.%s must be a string, number or boolean (got %s)' % (name, block_key, key, kind_of(value)))
            if not ENV_KEY_RE.match(key) or key.startswith('NODEFLEET_'):
                bad.add(key)
                plan['unmapped'].append(dict(app=name, key='%s.%s' % (block_key, key),
                                             reason='env name not allowed (^[A-Za-z_][A-Za-z0-9_]*$, prefix NODEFLEET_ reserved)'))
    return bad


def _group_blocks(name: str, env_blocks: Dict[str, Dict[str, Any]], all_groups: Iterable[str]) -> Tuple[Dict[str, Dict[str, Any]], set]:
    """Every group lists every app (a group's pm2_env_apps replaces the one of group all): the app's env_<group> block
    merged over its env, as `pm2 start --env <group>` does, or its plain env when it has no such block.
    Returns ({group: env}, the groups the app has a block of)."""
    base = env_blocks.get('env', {})
    own: Dict[str, Dict[str, Any]] = {}
    block_of: Dict[str, str] = {}
    for key, block in env_blocks.items():
        if key != 'env':
            group = group_name(key[4:])
            if group in own:
                raise EcosystemError('app %s: %s and %s both map to the inventory group %s; rename one' % (name, block_of[group], key, group))
            own[group] = block
            block_of[group] = key
    blocks = {'all': base}
    for group in all_groups:
        blocks[group] = dict(base)
        blocks[group].update(own.get(group, {}))

    return blocks, set(own)


def _secret_keys(blocks: Dict[str, Dict[str, Any]], bad_names: set, secret_names: Iterable[str], plain_names: Iterable[str]) -> Dict[str, str]:
    """A key is secret everywhere when any block's value looks secret (one reference per key): {key: why}."""
    found: Dict[str, str] = {}
    for env in blocks.values():
        for key, value in env.items():
            if key in bad_names:
                continue
            reason = looks_secret(key, value, secret_names, plain_names)
            if reason and key not in found:
                found[key] = reason
    return found


def _env_entry(name: str, group: str, env: Dict[str, Any], bad_names: set, secret_keys: Dict[str, str], plan: Plan) -> Dict[str, Any]:
    """One app's pm2_env_apps entry for one group; secret values go to the group's vault data."""
    entry: Dict[str, Any] = {'name': name, 'user': '{{ pm2_deploy_user }}', 'vars': {}, 'secrets': {}}
    for key, value in env.items():
        if key in bad_names:
            continue
        if key in secret_keys:
            var = vault_var(name, key)
            entry['secrets'][key] = var
            if group == 'all' or plan['vault']['all'].get(var) != value:
                plan['vault'].setdefault(group, {})[var] = value
        else:
            entry['vars'][key] = value
    return entry


def map_env(name: str, item: Dict[str, Any], pm2: Dict[str, Any], env_blocks: Dict[str, Dict[str, Any]],
            all_groups: List[str], plan: Plan, secret_names: Iterable[str], plain_names: Iterable[str]) -> None:
    """The app's pm2_env_apps entry in every group (plan['groups']), its secrets in plan['vault'], and how pm2_app
    gives it its env (item: env_file, or env for an interpreter that cannot load one)."""
    bad_names = _bad_env_names(name, env_blocks, plan)
    blocks, own = _group_blocks(name, env_blocks, all_groups)
    secret_keys = _secret_keys(blocks, bad_names, secret_names, plain_names)
    for group, env in blocks.items():
        plan['groups'].setdefault(group, {})[name] = _env_entry(name, group, env, bad_names, secret_keys, plan)
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
