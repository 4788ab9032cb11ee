# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""What the pm2_app lifecycle asks of a supervisor driver (PM2 or systemd), and the state of one app it watches."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import read_tail
from ansible_collections.nodefleet.pm2.plugins.module_utils._report import LOG_LINES, Failure, last_lines

if TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_app import AppRun

App = Dict[str, Any]
Spec = Dict[str, Any]
Plan = Dict[str, Any]
READY = 'ready'


class Waiting:
    """One app watched after its actions until it is ready or fails (see Supervisor.check)."""

    def __init__(self, spec: Spec, supervisor: Supervisor, fresh: bool = False) -> None:
        self.spec = spec
        self.supervisor = supervisor
        self.fresh = fresh            # its processes were created by this run: any restart is a crash
        self.first: Optional[Dict[int, tuple]] = None   # per instance, as first seen after the action
        self.since: Optional[tuple] = None              # (time, per instance) since when it looks ready
        self.deadline = 0.0
        self.app: Optional[App] = None                  # as last polled

    @property
    def name(self) -> str:
        return self.spec['name']

    def want(self, live: Dict[str, App]) -> int:
        """How many processes it must have: the spec's count, else (by name) as many as it had."""
        return self.spec.get('instances') or len(live.get(self.name, {}).get('instances', [])) or 1


class Supervisor:
    """One supervisor driver. The lifecycle (_pm2_app.AppRun) calls, in this order: prepare, read, digest_key,
    ensure_files, plan, begin_apply, apply / remove, end_apply, poll + check (+ failure), record, finish."""

    name = ''

    def __init__(self, run: AppRun) -> None:
        self.run = run
        self.live: Dict[str, App] = {}

    @property
    def other(self) -> Supervisor:
        return next(s for s in self.run.supervisors if s is not self)

    def has(self, name: str) -> bool:
        return name in self.live

    # ------------------------------------------------------------- before any change
    def prepare(self, specs: List[Spec]) -> None:
        """Check and complete what this supervisor needs of the specs it will run (may raise SpecError)."""

    def read(self, specs: List[Spec]) -> None:
        """Fill self.live with what this supervisor runs now, shaped as _pm2.parse_jlist's apps."""
        raise NotImplementedError

    def digest_key(self) -> Optional[bytes]:
        """The key of the env-file digests of its apps (None in check mode before one exists)."""
        raise NotImplementedError

    def ensure_files(self, specs: List[Spec]) -> bool:
        """Files it keeps for its apps, written outside check mode; True when they (would) change."""
        return False

    def plan(self, spec: Spec, elsewhere: bool) -> Plan:
        """Actions for one app it should run; ``elsewhere``: the other supervisor has the app now."""
        raise NotImplementedError

    def recorded_fingerprint(self, app: App) -> Dict[str, str]:
        raise NotImplementedError

    def log_files(self) -> List[str]:
        """Log files of its live apps: the report reads only what this run added to them."""
        return sorted({i[k] for a in self.live.values() for i in a['instances'] for k in ('out_log', 'err_log') if i.get(k)})

    # ------------------------------------------------------------- changes
    def begin_apply(self, specs: List[Spec], plans: List[Plan]) -> None:
        pass

    def apply(self, spec: Spec, plan: Plan) -> Optional[Waiting]:
        """Run one app's actions (a 'switch' removes it from the other supervisor first); what to watch after."""
        raise NotImplementedError

    def remove(self, name: str) -> None:
        """Stop and forget the app (state absent, or a switch to the other supervisor)."""
        raise NotImplementedError

    def end_apply(self) -> None:
        pass

    # ------------------------------------------------------------- readiness
    def poll(self, names: List[str]) -> Dict[str, App]:
        raise NotImplementedError

    def check(self, entry: Waiting, app: Optional[App], now: float) -> Optional[str]:
        """READY, None (not yet) or why it failed ('crashed', 'not online', ...)."""
        raise NotImplementedError

    def failure(self, entry: Waiting, why: str) -> Failure:
        raise NotImplementedError

    def record(self, waited: List[Waiting]) -> None:
        """After the wait, failed or not: what it keeps of the processes it acted on."""

    def stop_strays(self, waited: List[Waiting]) -> Dict[str, List[int]]:
        """After the wait: stop processes of the apps it acted on that it no longer tracks; app -> pids stopped."""
        return {}

    def finish(self) -> None:
        """After a successful run with changes."""

    # ------------------------------------------------------------- shared by the drivers
    def log_tails(self, instances: List[Dict[str, Any]]) -> Dict[str, List[str]]:
        """{'stderr (path)': lines, 'stdout (path)': lines} of this run, bounded per app."""
        tails = {}
        for stream, key in (('stderr', 'err_log'), ('stdout', 'out_log')):
            paths = sorted({i[key] for i in instances if i.get(key)})
            for path in paths:
                text = read_tail(path, self.run.log_offsets.get(path, 0))
                tails['%s (%s)' % (stream, path)] = last_lines(text, max(2, LOG_LINES // len(paths)))
        return tails

    @staticmethod
    def owned_dir(path: str, owner: Optional[tuple]) -> None:
        """A private directory (0700) of the given owner."""
        if not os.path.isdir(path):
            os.makedirs(path, 0o700)
        os.chmod(path, 0o700)
        if owner:
            os.chown(path, *owner)
