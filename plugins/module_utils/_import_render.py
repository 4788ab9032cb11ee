# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_import: the text of the files an import writes (inventory, group vars, the secrets to encrypt)."""

from __future__ import annotations

import textwrap
from typing import Any, Dict, List, Set, Tuple

from ansible_collections.nodefleet.pm2.plugins.module_utils._options import NAME_PATTERN

Plan = Dict[str, Any]

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover - yaml ships with ansible-core on the controller
    yaml = None
    HAS_YAML = False


class _Dumper(yaml.SafeDumper if HAS_YAML else object):
    """Block-style YAML with indented lists (yamllint's default)."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        return super().increase_indent(flow, False)


if HAS_YAML:
    # SafeDumper only knows the exact built-in types. Module arguments reach the action plugin as subclasses of them
    # (ansible-core 2.19 tags every value with its origin: _AnsibleTaggedStr, _AnsibleTaggedDict, ...), so `user`,
    # `health` or `environment` values made every real import fail with a RepresenterError; dump them as their base type.
    for _base, _represent in ((str, yaml.SafeDumper.represent_str), (bool, yaml.SafeDumper.represent_bool),
                              (int, yaml.SafeDumper.represent_int), (float, yaml.SafeDumper.represent_float),
                              (dict, yaml.SafeDumper.represent_dict), (list, yaml.SafeDumper.represent_list),
                              (tuple, yaml.SafeDumper.represent_list)):
        _Dumper.add_multi_representer(_base, _represent)


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=False, allow_unicode=True, width=160)


def _comment(lines: List[str]) -> str:
    out = []
    for line in lines:
        indent = len(line) - len(line.lstrip())
        wrapped = textwrap.wrap(line, width=116, subsequent_indent=' ' * (indent + 4), break_on_hyphens=False) or ['']
        out.extend('# %s' % w if w else '#' for w in wrapped)
    return ''.join(line + '\n' for line in out)


def report_lines(plan: Plan) -> List[str]:
    lines = []
    if plan['unmapped']:
        lines.append('Not imported (nodefleet.pm2 cannot map these keys):')
        for entry in plan['unmapped']:
            where = '%s.%s' % (entry['app'], entry['key']) if entry['app'] else entry['key']
            lines.append('  - %s%s: %s' % (where, ' = ' + entry['value'] if 'value' in entry else '', entry['reason']))
    if plan['secrets']:
        lines.append('Secrets moved to the vault-encrypted pm2_secrets.yml (names only):')
        for entry in plan['secrets']:
            lines.append('  - %s.%s -> %s (%s; %s)' % (entry['app'], entry['key'], entry['var'], entry['reason'], ', '.join(entry['groups'])))
    if plan['renamed']:
        lines.append('Renamed apps (PM2 names must match %s and must not read as a file):' % NAME_PATTERN)
        for entry in plan['renamed']:
            lines.append('  - %s -> %s' % (entry['from'], entry['to']))
    if plan['notes']:
        lines.append('Notes:')
        lines.extend('  - %s' % note for note in plan['notes'])
    return lines


def _section(comment: List[str], data: Dict[str, Any]) -> str:
    return _comment(comment) + to_yaml(data)


def _all_sections(plan: Plan, user: str, env_apps: Dict[str, Any]) -> List[str]:
    """What group all gets: everything the roles need for these apps, each variable under a comment saying which."""
    sections = [
        _section(['The OS user whose PM2 daemon runs the apps.'], {'pm2_deploy_user': user}),
        _section(['nodefleet.pm2.pm2_runtime creates this user, its PM2_HOME and its PM2 daemon (unit pm2-<user>.service).',
                  'Defining pm2_runtime_users elsewhere too? Keep one list: the last file read wins.'],
                 {'pm2_runtime_users': [{'name': '{{ pm2_deploy_user }}'}]}),
        _section(['nodefleet.pm2.pm2_deploy starts these apps from <pm2_deploy_to>/current.'], {'pm2_deploy_apps': plan['deploy_apps']}),
        _section(['nodefleet.pm2.pm2_env renders their env files (names of secrets only; values in pm2_secrets.yml).'], env_apps),
    ]
    if plan['logrotate']:
        sections.append(_section(
            ['nodefleet.pm2.pm2_logrotate rotates their logs where PM2 writes them on a host deployed by pm2_deploy: relative',
             'log paths under <pm2_deploy_to>/shared/logs (the release\'s logs/ links there), PM2\'s defaults under the user\'s',
             'PM2_HOME/logs; -[0-9]* is the -<pm_id> PM2 adds without merge_logs. Keep one pm2_logrotate_apps list.'],
            {'pm2_logrotate_apps': plan['logrotate']}))
    return sections


def render_group_vars(plan: Plan, group: str, user: str, with_report: bool) -> str:
    head = ['Generated by nodefleet.pm2.pm2_import from %s.' % plan['source']]
    apps = plan['groups'].get(group, {})
    env_apps = {'pm2_env_apps': [apps[name] for name in sorted(apps)]}
    if group != 'all':
        head.append('Env of the env_%s block merged over "env" (as pm2 start --env %s does), for the hosts of group %s.'
                    % (group, group, group))
        return '---\n' + _comment(head) + to_yaml(env_apps)
    head.append('Everything the roles need for these apps: nodefleet.pm2.pm2_runtime (the app user), pm2_env (their env, base '
                '"env" block), pm2_logrotate (their logs) and pm2_deploy (the apps).')
    if with_report:
        report = report_lines(plan)
        if report:
            head = head + [''] + report
    return '---\n' + _comment(head) + '\n' + '\n'.join(_all_sections(plan, user, env_apps))


def render_secrets(plan: Plan, group: str) -> str:
    """Plain text of a secrets file (to be encrypted by the caller)."""
    return '---\n' + to_yaml(dict(sorted(plan['vault'].get(group, {}).items())))


def render_inventory(plan: Plan) -> str:
    groups = sorted(g for g in plan['groups'] if g != 'all')
    head = ['Generated by nodefleet.pm2.pm2_import from %s: one group per env_* block.' % plan['source'],
            'Add your hosts under the group of their environment; hosts in no group get the base "env" block.']
    data = {'all': {'children': {g: {'hosts': {}} for g in groups}} if groups else {'hosts': {}}}
    return '---\n' + _comment(head) + to_yaml(data)


def output_files(plan: Plan, user: str = 'app') -> Dict[str, Tuple[str, bool]]:
    """{relative path: (text, encrypt)} of everything the import writes."""
    files = {'hosts.yml': (render_inventory(plan), False)}
    for group in sorted(plan['groups']):
        files['group_vars/%s/pm2_apps.yml' % group] = (render_group_vars(plan, group, user, group == 'all'), False)
        if plan['vault'].get(group):
            files['group_vars/%s/pm2_secrets.yml' % group] = (render_secrets(plan, group), True)
    return files


def secret_values(plan: Plan) -> Set[str]:
    """Every secret value, for masking (no_log) in results and errors."""
    return {str(value) for group in plan['vault'].values() for value in group.values()}
