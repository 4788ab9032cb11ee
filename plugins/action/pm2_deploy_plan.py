# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller side of the pm2_deploy role's plan: checks inputs, resolves each host's apps, decides who rolls,
and writes the run's summary. Never contacts a host."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import secrets
import socket

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.nodefleet.pm2.plugins.plugin_utils._deploy_inputs import InputError, host_inputs
from ansible_collections.nodefleet.pm2.plugins.plugin_utils._deploy_run import (
    check_topology,
    decide,
    hooks,
    run_settings,
    tree_hash,
)
from ansible_collections.nodefleet.pm2.plugins.plugin_utils._deploy_status import status_rows, status_table
from ansible_collections.nodefleet.pm2.plugins.plugin_utils._deploy_summary import summary_lines, summary_report

ARGUMENT_SPEC = dict(
    step=dict(type='str', required=True, choices=['host', 'run', 'decide', 'summary', 'status']),
    status_json=dict(type='str', default=''),
    mode=dict(type='str', default='deploy', choices=['deploy', 'rollback', 'status']),
    hosts=dict(type='list', elements='str', default=[]),
    results=dict(type='str', default='__pm2_deploy_plan'),
)


def _ansible_playbook_pid() -> int:
    """The topmost ansible-playbook of this worker's ancestry: alive exactly as long as this run."""
    pid, found = os.getppid(), 0
    while pid > 1:
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as handle:
                cmdline = handle.read().replace(b'\0', b' ')
            with open('/proc/%d/stat' % pid) as handle:
                parent = int(handle.read().rsplit(')', 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if b'ansible-playbook' in cmdline:
            found = pid
        elif found:
            break
        pid = parent
    return found


def _alive(pid: int) -> bool:
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            return b'ansible-playbook' in handle.read()
    except OSError:
        return False


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        dummy, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        self._vars = task_vars
        try:
            return getattr(self, '_' + params['step'])(params)
        except InputError as exc:
            return dict(failed=True, changed=False, msg='pm2_deploy: %s%s' % (
                '' if params['step'] != 'host' else '%s: ' % task_vars.get('inventory_hostname'), exc))

    def _var(self, name, default=None):
        if name not in self._vars:
            return default
        try:
            return self._templar.template(self._vars[name])
        except AnsibleError as exc:
            raise InputError('%s: %s' % (name, str(exc).splitlines()[0]))

    def _deploy_vars(self) -> dict:
        names = [k for k in self._vars if k.startswith('pm2_deploy_')]
        values = dict((k, self._var(k)) for k in names)
        # A host set up by pm2_runtime with its own PM2_HOME or pm2 path is deployed with the same.
        if not values.get('pm2_deploy_pm2_home'):
            users = self._var('pm2_runtime_users', []) or []
            for user in users if isinstance(users, list) else []:
                if isinstance(user, dict) and user.get('name') == values.get('pm2_deploy_user'):
                    values['pm2_deploy_pm2_home'] = user.get('pm2_home') or (
                        os.path.join(user['home'], '.pm2') if user.get('home') else '')
        if not values.get('pm2_deploy_pm2_executable') and 'pm2_runtime_pm2_bin' in self._vars:
            values['pm2_deploy_pm2_executable'] = self._var('pm2_runtime_pm2_bin')
        return values

    def _host(self, params):
        host = self._vars['inventory_hostname']
        groups = self._vars.get('groups', {})
        known = set(groups.get('all', [])) | set(groups)
        inputs = host_inputs(host, self._deploy_vars(), list(self._vars.get('group_names', [])), known)
        return dict(changed=False, ansible_facts={'_pm2_deploy_host': inputs})

    def _hostvar(self, host, name):
        return self._vars['hostvars'][host].get(name)

    def _run(self, params):
        v = self._deploy_vars()
        inventory = set(self._vars.get('groups', {}).get('all', []))
        run = run_settings(v, params['mode'], inventory)
        hosts = params['hosts']
        inputs = dict((h, self._hostvar(h, '_pm2_deploy_host')) for h in hosts)
        if params['mode'] != 'status':
            check_topology(inputs, hosts)
        run['hooks'] = self._checked_hooks(v)
        self._check_source(run.get('source'))
        run.update(
            token=secrets.token_hex(8),
            controller=socket.gethostname(),
            user=os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown',
            pid=_ansible_playbook_pid(),
            started=datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
            hosts=hosts,
            check_mode=bool(self._task.check_mode or self._play_context.check_mode),
        )
        run['owner'] = dict((k, run[k]) for k in ('token', 'controller', 'user', 'pid', 'started'))
        return dict(changed=False, ansible_facts={'_pm2_deploy_run': run})

    def _checked_hooks(self, v):
        """Hook task files, each found on the controller (a missing one stops the run before any change)."""
        found = {}
        for name, path in hooks(v).items():
            if path and not os.path.isfile(self._hook_path(path)):
                raise InputError('pm2_deploy_%s_tasks_file: %s not found (relative paths are taken from the playbook '
                                 'directory or the inventory directory)' % (name, path))
            found[name] = self._hook_path(path) if path else ''
        return found

    @staticmethod
    def _check_source(source):
        """A local source directory exists (its tree hash is the release id); a local artifact has its sha256."""
        if source and source['kind'] == 'path' and source['build_host'] in ('localhost', '127.0.0.1'):
            if not os.path.isdir(source['path']):
                raise InputError('pm2_deploy_source_path: %s is not a directory on the controller' % source['path'])
            source['release'] = source['release'] or tree_hash(source['path'], source['exclude'])
        if source and source['kind'] == 'artifact' and not source['url']:
            if not os.path.isfile(source['artifact']):
                raise InputError('pm2_deploy_artifact: %s is not a file on the controller' % source['artifact'])
            digest = hashlib.sha256()
            with open(source['artifact'], 'rb') as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b''):
                    digest.update(chunk)
            if digest.hexdigest() != source['sha256']:
                raise InputError('pm2_deploy_artifact_sha256: %s has sha256 %s, not %s; nothing was changed'
                                 % (source['artifact'], digest.hexdigest(), source['sha256']))

    def _hook_path(self, path):
        path = os.path.expanduser(path)
        if os.path.isabs(path):
            return path
        for base in (self._vars.get('playbook_dir'), self._vars.get('inventory_dir')):
            if base and os.path.isfile(os.path.join(base, path)):
                return os.path.join(base, path)
        return path

    def _decide(self, params):
        run = self._hostvar('localhost', '_pm2_deploy_run')
        hosts = params['hosts']
        results = dict((h, self._hostvar(h, params['results'])) for h in hosts)
        inputs = dict((h, self._hostvar(h, '_pm2_deploy_host')) for h in hosts)
        decision = decide(run, hosts, results, inputs, _alive)
        return dict(changed=False, ansible_facts={'_pm2_deploy_decision': decision})

    def _summary(self, params):
        run = self._hostvar('localhost', '_pm2_deploy_run')
        decision = self._hostvar('localhost', '_pm2_deploy_decision') or {}
        hosts = run['hosts']
        reports = dict((h, self._hostvar(h, '_pm2_deploy_report')) for h in hosts)
        batches = self._hostvar('localhost', '_pm2_deploy_batches') or []
        report = summary_report(run, decision, reports, batches)
        result = dict(changed=False, summary=report, lines=summary_lines(report))
        if not run['check_mode']:
            directory = os.path.join(os.path.expanduser(run['report_dir']), run['started'].replace(':', '').replace('-', ''))
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, 'summary.json')
            with open(path, 'w', encoding='utf-8') as handle:
                json.dump(report, handle, indent=2, sort_keys=True)
                handle.write('\n')
            result['report'] = path
            result['lines'].append('report: %s' % path)
        result['failure_message'] = ' | '.join(report['failure_lines'])
        return result

    def _status(self, params):
        rows = []
        for host in params['hosts']:
            info = self._hostvar(host, params['results']) or {}
            if info.get('failed') or info.get('unreachable'):
                rows.append({'host': host, 'app': '-', 'supervisor': '-', 'online': 0, 'desired': 0,
                             'status': 'unreachable' if info.get('unreachable') else 'error: %s' % info.get('msg', ''),
                             'memory_mb': 0, 'restarts': 0, 'crash_restarts': 0, 'release': '-', 'current': '-',
                             'mismatch': False, 'locked': False})
                continue
            rows.extend(status_rows(host, self._hostvar(host, '_pm2_deploy_host'), info))
        result = dict(changed=False, rows=rows, lines=status_table(rows))
        target = params['status_json']
        if target and target != '-':  # the output asked for, on the controller: written in check mode too
            with open(os.path.expanduser(target), 'w', encoding='utf-8') as handle:
                json.dump(rows, handle, indent=2)
                handle.write('\n')
        return result
