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

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import EcosystemError, atomic_write
from ansible_collections.nodefleet.pm2.plugins.module_utils._ecosystem import load_ecosystem
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_plan import plan_import
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_render import output_files, secret_values, yaml
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_secrets import redact_text

ARGUMENT_SPEC = dict(
    src=dict(type='path', required=True),
    dest=dict(type='path', required=True),
    vault_password_file=dict(type='path', no_log=True),
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
        path = self._path(params['vault_password_file'])
        if not os.path.isfile(path):
            raise ImportFailure('vault_password_file %s does not exist' % path)
        try:
            secret = get_file_vault_secret(filename=path, vault_id=params['vault_id'], loader=self._loader)
            secret.load()
        except AnsibleError as exc:
            raise ImportFailure('cannot read the vault password from %s: %s' % (path, type(exc).__name__))
        return VaultLib([(params['vault_id'], secret)]), secret

    def _import(self, params, masked):
        if yaml is None:
            raise ImportFailure('PyYAML is required on the controller')
        src = self._path(params['src'])
        dest = self._path(params['dest'])
        config = load_ecosystem(src, node=params['node_executable'], timeout=params['timeout'], environ=params['environment'])
        plan = plan_import(config, health=params['health'], secret_names=params['secret_names'], plain_names=params['plain_names'],
                           source=os.path.basename(src))
        masked.update(secret_values(plan))
        files = output_files(plan, user=params['user'])
        vault = self._vault(params)
        if any(encrypt for _text, encrypt in files.values()) and vault is None:
            raise ImportFailure('%s holds secret-looking values (%s); give vault_password_file to encrypt them' % (
                src, ', '.join('%s.%s' % (s['app'], s['key']) for s in plan['secrets'])))

        same = self._unchanged(files, dest, vault, params['force'])
        written = []
        for rel, (text, encrypt) in sorted(files.items()):
            target = os.path.join(dest, rel)
            if target in same:
                continue
            written.append(target)
            if self._task.check_mode:
                continue
            data = vault[0].encrypt(text, vault[1], vault_id=params['vault_id']) if encrypt else text.encode('utf-8')
            self._write(target, data, 0o600 if encrypt else 0o644)
        return self._summary(src, dest, files, written, plan)

    def _unchanged(self, files, dest, vault, force):
        """The output files already there with the same content; refuses to overwrite others unless forced."""
        same, differ = [], []
        for rel, (text, encrypt) in sorted(files.items()):
            target = os.path.join(dest, rel)
            if not os.path.lexists(target):
                continue
            (same if self._same(target, text, encrypt, vault) else differ).append(target)
        if differ and not force:
            raise ImportFailure('refusing to overwrite %s (content differs); set force=true to replace' % ', '.join(differ))
        return same

    def _summary(self, src, dest, files, written, plan):
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
    def _write(target, data, mode):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        atomic_write(target, data, mode)
