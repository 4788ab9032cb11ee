# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The pm2_app and pm2_info backends as functions, for modules that apply or read apps as one step of their own
(pm2_release): same planning, actions, readiness checks and failure reports as the modules."""

from __future__ import annotations

from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import Pm2Error, Pm2Runner
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_app import (
    APP_OPTIONS,
    Pm2AppModule,
    Pm2InfoModule,
)
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd import SystemdRunner


class AppsError(Exception):
    def __init__(self, msg: str, **details):
        super().__init__(msg)
        self.details = details


class _View:
    """The caller's AnsibleModule with other params and check mode, as the backends read them."""

    def __init__(self, module, params: dict, check_mode: bool):
        self._module = module
        self.params = params
        self.check_mode = check_mode
        self._diff = module._diff

    def __getattr__(self, name):
        return getattr(self._module, name)


def _run(backend_class, module, params: dict, check_mode: bool):
    backend = backend_class(_View(module, params, check_mode))
    backend.runner = Pm2Runner(backend.module, **dict((k, params.get(k)) for k in ('executable', 'pm2_home', 'user')))
    backend.systemd = SystemdRunner(backend.module)
    try:
        backend._execute()
    except Pm2Error as exc:
        details = dict(exc.details)
        details.update(backend._result())
        raise AppsError(str(exc), **details)
    result = backend._result()
    result['changed'] = backend.changed
    if backend.module._diff and backend_class is Pm2AppModule:
        result['diff'] = backend.diff()
    return result


def apply_apps(module, scope: dict, items: list, check_mode: bool) -> dict:
    """What nodefleet.pm2.pm2_app returns for apps=items (changed, apps: name/action/actions/reasons/status)."""
    params = dict((key, None) for key in APP_OPTIONS)
    params.update(scope, apps=items, save=True, state='started', exec_mode='fork', supervisor='pm2')
    return _run(Pm2AppModule, module, params, check_mode)


def read_apps(module, scope: dict) -> dict:
    """What nodefleet.pm2.pm2_info returns as apps (never starts a PM2 daemon)."""
    return _run(Pm2InfoModule, module, dict(scope, name=None), True)['apps']
