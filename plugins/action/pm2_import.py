# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Controller side of nodefleet.pm2.pm2_import: everything runs here, nothing on the target host."""

from __future__ import annotations

import os

from ansible.errors import AnsibleError
from ansible.module_utils.common.parameters import remove_values
from ansible.parsing.vault import VaultLib, get_file_vault_secret
from ansible.plugins.action import ActionBase

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import EcosystemError, atomic_write_all
from ansible_collections.nodefleet.pm2.plugins.module_utils._ecosystem import load_ecosystem
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_options import check_options
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_plan import plan_import
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_render import output_files, secret_values, yaml
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_secrets import redact_text

ARGUMENT_SPEC = dict(
    src=dict(type='path', required=True),
    dest=dict(type='path', required=True),
    vault_password_file=dict(type='path', no_log=False),  # a path, not the password
    vault_id=dict(type='str', default='default'),
    force=dict(type='bool', default=False),
    user=dict(type='str', default='app'),
    health=dict(type='dict'),
    secret_names=dict(type='list', elements='str', default=[], no_log=False),
    plain_names=dict(type='list', elements='str', default=[]),
    node_executable=dict(type='str', default='node'),
    timeout=dict(type='int', default=10),
    environment=dict(type='dict', default={}),
)


class ImportFailure(Exception):
    pass


class ActionModule(ActionBase):

    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        super().run(tmp, task_vars)
        validation, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        masked = set(validation._no_log_values)
        result = dict(changed=False)
        try:
            result.update(self._import(params, masked))
        except (ImportFailure, EcosystemError) as exc:
            result.update(failed=True, msg=redact_text(str(exc)))
        except Exception as exc:  # never let a traceback carry a value of the file
            result.update(failed=True, msg='pm2_import failed: %s' % type(exc).__name__)
        # Last line of defence: no secret value may leave in the result.
        return remove_values(result, masked)

    def _path(self, path):
        return os.path.abspath(os.path.expanduser(path))

    def _vault(self, params):
        if not params['vault_password_file']:
            return None
        path = params['vault_password_file']
        try:
            secret = get_file_vault_secret(filename=path, vault_id=params['vault_id'], loader=self._loader)
            secret.load()
        except AnsibleError as exc:
            raise ImportFailure('vault_password_file: cannot read a vault password from %s (%s: empty, unreadable, or a '
                                'script that failed)' % (path, type(exc).__name__))
        return VaultLib([(params['vault_id'], secret)]), secret

    def _import(self, params, masked):
        if yaml is None:
            raise ImportFailure('PyYAML is required on the controller')
        params = dict(params, src=self._path(params['src']), dest=self._path(params['dest']))
        if params['vault_password_file']:
            params['vault_password_file'] = self._path(params['vault_password_file'])
        # Every option is checked, and the vault password read, before the file is evaluated or anything written.
        params = check_options(params)
        src, dest = params['src'], params['dest']
        vault = self._vault(params)
        notes = []
        config = load_ecosystem(src, node=params['node_executable'], timeout=params['timeout'], environ=params['environment'],
                                notes=notes)
        plan = plan_import(config, health=params['health'], secret_names=params['secret_names'], plain_names=params['plain_names'],
                           source=os.path.basename(src), notes=notes)
        masked.update(secret_values(plan))
        files = output_files(plan, user=params['user'])
        if any(encrypt for _text, encrypt in files.values()) and vault is None:
            raise ImportFailure('vault_password_file: %s holds secret-looking values (%s); give vault_password_file to encrypt them' % (
                src, ', '.join('%s.%s' % (s['app'], s['key']) for s in plan['secrets'])))

        same = self._unchanged(files, dest, vault, params['force'])
        writes = []
        for rel, (text, encrypt) in sorted(files.items()):
            target = os.path.join(dest, rel)
            if target in same:
                continue
            if encrypt:
                writes.append((target, vault[0].encrypt(text, vault[1], vault_id=params['vault_id']), 0o600))
            else:
                writes.append((target, text.encode('utf-8'), 0o644))
        if not self._task.check_mode:
            self._write_all(writes)
        return self._summary(src, dest, files, [target for target, _data, _mode in writes], plan, params['user'])

    @staticmethod
    def _in_the_way(dest, target):
        """Refuses a target that is not a regular file, or whose first existing parent below dest is not a directory."""
        if os.path.islink(target) or os.path.lexists(target) and not os.path.isfile(target):
            raise ImportFailure('dest: %s is not a regular file (a directory or a symlink); refusing to replace it' % target)
        parent = os.path.dirname(target)
        while parent != dest and not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        if parent != dest and (os.path.islink(parent) or not os.path.isdir(parent)):
            raise ImportFailure('dest: %s is not a directory' % parent)

    def _unchanged(self, files, dest, vault, force):
        """The output files already there with the same content; refuses to overwrite others unless forced, and
        anything in the way of a file, before any is written."""
        same, differ = [], []
        for rel, (text, encrypt) in sorted(files.items()):
            target = os.path.join(dest, rel)
            self._in_the_way(dest, target)
            if not os.path.lexists(target):
                continue
            (same if self._same(target, text, encrypt, vault) else differ).append(target)
        if differ and not force:
            raise ImportFailure('dest: refusing to overwrite %s (content differs); set force=true to replace' % ', '.join(differ))
        return same

    def _summary(self, src, dest, files, written, plan, user):
        summary = dict(
            changed=bool(written),
            src=src,
            dest=dest,
            files=sorted(os.path.join(dest, rel) for rel in files),
            written=written,
            apps=[app['name'] for app in plan['deploy_apps']],
            groups=sorted(plan['groups']),
            renamed=plan['renamed'],
            unmapped=plan['unmapped'],
            secrets_moved=[{k: s[k] for k in ('app', 'key', 'var', 'reason', 'groups')} for s in plan['secrets']],
            runtime_users=[user],
            logrotate_apps=[entry['name'] for entry in plan['logrotate']],
            notes=plan['notes'],
        )
        summary['msg'] = '%d app(s), %d group(s), %d secret(s) moved to vault, %d key(s) not imported; %s' % (
            len(summary['apps']), len(summary['groups']), len(summary['secrets_moved']), len(summary['unmapped']),
            ('%d file(s) %s' % (len(written), 'to write' if self._task.check_mode else 'written')) if written else 'files up to date')
        return summary

    @staticmethod
    def _same(target, text, encrypt, vault):
        try:
            with open(target, 'rb') as handle:
                data = handle.read()
        except OSError:
            return False
        if not encrypt:
            return data == text.encode('utf-8')
        if vault is None or not data.startswith(b'$ANSIBLE_VAULT'):
            return False
        try:
            return vault[0].decrypt(data) == text.encode('utf-8')
        except AnsibleError:
            return False

    @staticmethod
    def _write_all(writes):
        """Every file or none (the shared atomic write, all renamed into place once all are written)."""
        try:
            atomic_write_all(writes)
        except OSError as exc:
            raise ImportFailure('dest: cannot write %s: %s; nothing was written' % (
                getattr(exc, 'filename', None) or 'the files', exc.strerror or type(exc).__name__))
