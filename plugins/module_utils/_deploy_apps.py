# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The pm2_app and pm2_info backends as one step of another module (pm2_release): same planning, actions,
readiness checks and crash reports, with pm2_app's failure turned into per-app report lines for the deploy."""

from __future__ import annotations

from typing import Any, Dict, List

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_app import run_pm2_app
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_info import read_apps as read_pm2_info


class AppsError(Exception):
    def __init__(self, msg: str, **details: Any) -> None:
        super().__init__(msg)
        self.details = details


def report_lines(failure: Dict[str, Any]) -> List[str]:
    """One crashed app, as the deploy's summary shows it: status and restarts, PM2's reason, the log tails."""
    lines = ['%s %s; %d restarts since the action' % (failure['why'], failure['status'], failure['restarts'])]
    lines += ['%s: %s' % (failure['supervisor'], line) for line in failure.get('reason') or []]
    for title, tail in (failure.get('logs') or {}).items():
        lines.append('%s:%s' % (title, '' if tail else ' (nothing written)'))
        lines += ['  ' + line for line in tail]
    return lines


def apply_apps(module: Any, scope: Dict[str, Any], items: List[Dict[str, Any]], check_mode: bool) -> Dict[str, Any]:
    """What nodefleet.pm2.pm2_app returns for apps=items; its failure as AppsError with log_tails per app."""
    try:
        return run_pm2_app(module, dict(scope, apps=items, save=True), check_mode)
    except Pm2Error as exc:
        details = dict(exc.details)
        failures = details.pop('failures', None) or []
        details['log_tails'] = dict((f['app'], report_lines(f)) for f in failures)
        raise AppsError(str(exc), **details)


def read_apps(module: Any, scope: Dict[str, Any]) -> Dict[str, Any]:
    """What nodefleet.pm2.pm2_info returns as apps (never starts a PM2 daemon)."""
    try:
        return read_pm2_info(module, dict(scope, name=None))['apps']
    except Pm2Error as exc:
        raise AppsError(str(exc), **exc.details)
