# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""What this collection knows of systemd at run time: the ``systemctl show`` parser and the runner that reads the
apps' units, instances and journal.

What runs is read from systemd and /proc, never from our own records: the release is the resolved working
directory of the main process; the only thing recorded is the keyed digest of the env file the instances were
last started with.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error, SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd_unit import (
    INSTANCE_RE,
    UNIT_DIR,
    UNIT_PREFIX,
    WANTS_DIR,
    instance_unit,
    parse_unit,
    state_path,
    unit_path,
)

App = Dict[str, Any]

STATUS = {
    ('active', 'running'): 'online',
    ('active', 'exited'): 'stopped',
    ('activating', 'auto-restart'): 'waiting restart',
    ('activating', 'start'): 'launching',
    ('activating', 'start-pre'): 'launching',
    ('deactivating', 'stop-sigterm'): 'stopping',
    ('deactivating', 'stop'): 'stopping',
    ('deactivating', 'stop-sigkill'): 'stopping',
    ('failed', 'failed'): 'errored',
    ('inactive', 'dead'): 'stopped',
}
SHOW_PROPERTIES = ('Id', 'ActiveState', 'SubState', 'MainPID', 'NRestarts', 'ExecMainStartTimestamp', 'MemoryCurrent',
                   'LoadState')


# --------------------------------------------------------------------------- systemctl show parser

def parse_show(text: str) -> Dict[str, Dict[str, str]]:
    """``systemctl show -p ... u1 u2`` (blank-line separated blocks) -> {unit id: {property: value}}."""
    units = {}
    for block in re.split(r'\n\s*\n', text.strip()):
        props = {}
        for line in block.splitlines():
            key, sep, value = line.partition('=')
            if sep:
                props[key] = value
        if props.get('Id'):
            units[props['Id']] = props
    return units


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def instance_state(index: int, props: Dict[str, str], enabled: bool, release: Optional[str] = None,
                   err_log: Optional[str] = None, out_log: Optional[str] = None) -> Dict[str, Any]:
    """One unit instance in the same shape as a PM2 process from parse_jlist. NRestarts counts automatic restarts
    only and starts again at 0 with every start or restart systemctl is asked for."""
    status = STATUS.get((props.get('ActiveState'), props.get('SubState')), props.get('ActiveState') or 'unknown')
    started = (props.get('ExecMainStartTimestamp') or '').lstrip('@')
    memory = _int(props.get('MemoryCurrent'))
    return {
        'pm_id': index,
        'pid': _int(props.get('MainPID')),
        'status': status,
        'restart_time': _int(props.get('NRestarts')),
        'pm_uptime': _int(started) * 1000 if started.isdigit() else 0,
        'memory': memory if memory < 2 ** 63 else 0,  # [not set] is reported as 2^64-1
        'cpu': 0,
        'out_log': out_log,
        'err_log': err_log,
        'enabled': enabled,
        'release': release,
    }


def journal_entry(line: str) -> Optional[Tuple[bool, str]]:
    """(written by systemd itself, message) of one ``journalctl -o json`` line."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    message = entry.get('MESSAGE')
    if isinstance(message, list):  # not valid UTF-8: an array of bytes
        message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode('utf-8', 'replace')
    if not isinstance(message, str):
        return None
    return entry.get('_PID') == '1' or entry.get('SYSLOG_IDENTIFIER') == 'systemd', message


# --------------------------------------------------------------------------- runner

class SystemdRunner:
    """systemctl / journalctl with argument lists; reads unit files, /proc and our digest records."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.calls = 0
        self.systemctl = module.get_bin_path('systemctl')
        self.journalctl = module.get_bin_path('journalctl')

    @property
    def available(self) -> bool:
        return bool(self.systemctl) and os.path.isdir('/run/systemd/system')

    def require(self, field: str = 'supervisor') -> None:
        if not self.available:
            raise SpecError(field, 'systemd is not running on this host (no /run/systemd/system or no systemctl)')
        if os.geteuid() != 0:
            raise SpecError(field, 'systemd apps are installed by root; use become: true')

    def run(self, *args: str) -> str:
        self.calls += 1
        rc, out, err = self.module.run_command([self.systemctl] + list(args))
        if rc != 0:
            raise Pm2Error('systemctl %s failed (rc=%s): %s' % (' '.join(args[:2]), rc, (err or out).strip()[-2000:]),
                           rc=rc, stdout=out[-2000:], stderr=err[-2000:])
        return out

    def try_run(self, *args: str) -> bool:
        """For clean-up whose failure changes nothing (reset-failed of a unit systemd already forgot)."""
        self.calls += 1
        return self.module.run_command([self.systemctl] + list(args))[0] == 0

    def show(self, units: List[str]) -> Dict[str, Dict[str, str]]:
        if not units:
            return {}
        return parse_show(self.run('show', '--timestamp=unix', '-p', ','.join(SHOW_PROPERTIES), '--', *units))

    def journal(self, units: Iterable[str], lines: int, since: Optional[float] = None) -> List[Tuple[bool, str]]:
        """The last lines of the units' journal: (written by systemd itself, message)."""
        if not self.journalctl:
            return []
        args = [self.journalctl, '--no-pager', '-o', 'json', '-n', str(lines)]
        if since:
            args += ['--since', '@%d' % int(since)]
        for unit in units:
            args += ['-u', unit]
        rc, out, _err = self.module.run_command(args)
        if rc != 0:
            return []
        return [e for e in (journal_entry(line) for line in out.splitlines()) if e is not None][-lines:]

    # ------------------------------------------------------------- reading what the host has
    @staticmethod
    def managed_names() -> List[str]:
        try:
            entries = os.listdir(UNIT_DIR)
        except OSError:
            return []
        return sorted(e[len(UNIT_PREFIX):-len('@.service')] for e in entries
                      if e.startswith(UNIT_PREFIX) and e.endswith('@.service'))

    @staticmethod
    def enabled_instances(name: str) -> Set[int]:
        try:
            entries = os.listdir(WANTS_DIR)
        except OSError:
            return set()
        matches = (INSTANCE_RE.match(entry) for entry in entries)
        return {int(m.group(2)) for m in matches if m and m.group(1) == name}

    def loaded_instances(self, names: List[str]) -> Dict[str, Set[int]]:
        """{name: set(index)} of the instances systemd has loaded (running, failed or recently stopped)."""
        if not names or not self.available:
            return {}
        out = self.run('list-units', '--all', '--plain', '--no-legend', '--full', '--type=service',
                       *['%s%s@*.service' % (UNIT_PREFIX, n) for n in names])
        found: Dict[str, Set[int]] = {}
        for line in out.splitlines():
            parts = line.split()
            match = INSTANCE_RE.match(parts[0]) if parts else None
            if match and match.group(1) in names:
                found.setdefault(match.group(1), set()).add(int(match.group(2)))
        return found

    @staticmethod
    def read_env_digest(name: str) -> Optional[str]:
        try:
            with open(state_path(name)) as handle:
                return json.load(handle).get('env_digest')
        except (OSError, ValueError):
            return None

    @staticmethod
    def process_rss(pid: int) -> int:
        """Resident memory of the main process (bytes) where the cgroup's MemoryCurrent is not accounted."""
        try:
            with open('/proc/%d/status' % pid) as handle:
                for line in handle:
                    if line.startswith('VmRSS:'):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return 0

    @staticmethod
    def process_release(pid: int) -> Optional[str]:
        if not pid:
            return None
        try:
            return os.path.realpath(os.readlink('/proc/%d/cwd' % pid))
        except OSError:
            return None

    @staticmethod
    def read_unit(name: str) -> Optional[str]:
        try:
            with open(unit_path(name)) as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def _instances(self, name: str, indexes: Set[int], props: Dict[str, Dict[str, str]], settings: Dict[str, Any]) -> List[Dict[str, Any]]:
        enabled = self.enabled_instances(name)
        instances = []
        for index in sorted(indexes):
            p = props.get(instance_unit(name, index), {})
            if p.get('LoadState') == 'not-found':
                continue
            pid = _int(p.get('MainPID'))
            instance = instance_state(index, p, index in enabled, self.process_release(pid), settings.get('err_log'),
                                      settings.get('out_log'))
            if pid and not instance['memory']:
                instance['memory'] = self.process_rss(pid)
            instances.append(instance)
        return instances

    def apps(self, names: Optional[Iterable[str]] = None) -> Dict[str, App]:
        """{name: app} for our units (all of them, or the given names), shaped like parse_jlist's apps."""
        if not self.available:
            return {}
        names = sorted(set(self.managed_names()) if names is None else set(names))
        loaded = self.loaded_instances(names)
        indexes = {n: loaded.get(n, set()) | self.enabled_instances(n) for n in names}
        props = self.show([instance_unit(n, i) for n in names for i in sorted(indexes[n])])
        apps = {}
        for name in names:
            text = self.read_unit(name)
            if text is None and not indexes[name]:
                continue
            settings = parse_unit(text)
            instances = self._instances(name, indexes[name], props, settings)
            running = [i['release'] for i in instances if i['release']]
            apps[name] = {
                'name': name,
                'supervisor': 'systemd',
                'unit': text,
                'fingerprint': settings['fingerprint'],
                'user': settings.get('user'),
                'env_digest': self.read_env_digest(name),
                'script': settings.get('script'),
                'cwd': settings.get('cwd'),
                'exec_mode': 'fork',
                'namespace': 'default',
                'version': None,
                'recorded_release': running[0] if running else None,
                'conflict': False,
                'instances': instances,
            }
        return apps
