# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""systemd as the alternative supervisor: unit renderer, ``systemctl show`` parser, pure planner and the runner.

One template unit per app (``nodefleet-<name>@.service``), one instance per process (``@0`` .. ``@N-1``), so the
instance id reaches the app as NODE_APP_INSTANCE like under PM2. What runs is read from systemd and /proc, never
from our own records: the release is the resolved working directory of the main process; the only thing recorded
is the keyed digest of the env file the instances were last started with.
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import (
    Pm2Error,
    SpecError,
    format_fingerprint,
    read_fingerprint,
)

UNIT_DIR = '/etc/systemd/system'
WANTS_DIR = os.path.join(UNIT_DIR, 'multi-user.target.wants')
STATE_DIR = '/var/lib/nodefleet/systemd'
UNIT_PREFIX = 'nodefleet-'
HEADER = '# Managed by nodefleet.pm2 (supervisor: systemd) - changes here are overwritten.'
SPEC_LINE = '# nodefleet-spec: '
USER_LINE = '# nodefleet-user: '
SCRIPT_LINE = '# nodefleet-script: '

# PM2 defaults, so an app behaves the same under either supervisor unless told otherwise.
PM2_KILL_TIMEOUT_MS = 1600
PM2_MAX_RESTARTS = 16
PM2_MIN_UPTIME_MS = 1000
SYSTEMD_RESTART_SEC_MS = 100

# PM2 features with no systemd counterpart that change how the app behaves: refused, never silently dropped.
UNSUPPORTED = {
    'watch': 'file watching is a PM2 development feature; use PM2 for this app',
    'ignore_watch': 'file watching is a PM2 development feature; use PM2 for this app',
    'watch_delay': 'file watching is a PM2 development feature; use PM2 for this app',
    'cron_restart': 'PM2 cron restarts have no unit option; use a systemd timer or PM2 for this app',
    'exp_backoff_restart_delay': 'systemd restarts after a fixed restart_delay; remove it or use PM2',
    'namespace': 'PM2 namespaces do not exist under systemd; remove it',
}
# PM2 options about PM2's own log formatting and ready signal: systemd has no use for them (journald stamps every
# line; readiness is active + stays active + the deploy's health check). Accepted and reported as ignored.
IGNORED = ('wait_ready', 'listen_timeout', 'log_date_format', 'merge_logs', 'time')

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
_INSTANCE_RE = re.compile(r'^nodefleet-([a-z0-9][a-z0-9.-]*)@(\d+)\.service$')


def template_unit(name):
    return '%s%s@.service' % (UNIT_PREFIX, name)


def instance_unit(name, index):
    return '%s%s@%d.service' % (UNIT_PREFIX, name, index)


def unit_path(name):
    return os.path.join(UNIT_DIR, template_unit(name))


def state_path(name):
    return os.path.join(STATE_DIR, '%s.json' % name)


# --------------------------------------------------------------------------- validation and unit rendering

def check_systemd_spec(spec, params):
    """Refuse PM2-only options for a systemd app; returns the names of accepted-but-ignored options."""
    if spec['pm2']['exec_mode'] == 'cluster':
        raise SpecError('exec_mode', 'cluster mode needs PM2 (one port shared by N workers); under systemd run fork-mode '
                                     'instances that listen with reusePort or on a port per NODE_APP_INSTANCE')
    for field, why in sorted(UNSUPPORTED.items()):
        if params.get(field) not in (None, False, []):
            raise SpecError(field, 'not supported with supervisor systemd: %s' % why)
    return [field for field in IGNORED if params.get(field) not in (None, False)]


def _quote_word(word):
    """One ExecStart word: double-quoted, with systemd's specifier (%) and variable ($) characters escaped."""
    escaped = word.replace('\\', '\\\\').replace('"', '\\"').replace('%', '%%').replace('$', '$$')
    return '"%s"' % escaped


def _quote_assignment(key, value):
    """Environment= "KEY=value" with C escapes (the value may hold spaces, quotes or newlines) and % escaped."""
    text = '%s=%s' % (key, value)
    text = text.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n').replace('%', '%%')
    return '"%s"' % text


def _ms(value):
    return '%dms' % value


def restart_policy(pm2):
    """PM2 restart fields -> unit lines. max_restarts crashes each within min_uptime (+ the delay) stop the app,
    as in PM2; crashes further apart restart it forever, as in PM2."""
    restart_sec = pm2['restart_delay'] if pm2['restart_delay'] else SYSTEMD_RESTART_SEC_MS
    max_restarts = PM2_MAX_RESTARTS if pm2['max_restarts'] is None else pm2['max_restarts']
    min_uptime = PM2_MIN_UPTIME_MS if pm2['min_uptime'] is None else pm2['min_uptime']
    burst = max_restarts + 1  # the first start plus max_restarts restarts
    interval = max(1000, burst * (min_uptime + restart_sec))
    unit = ['StartLimitBurst=%d' % burst, 'StartLimitIntervalSec=%s' % _ms(interval)]
    service = [
        'Restart=%s' % ('no' if pm2['autorestart'] is False else 'always'),
        'RestartSec=%s' % _ms(restart_sec),
        # PM2 stops with SIGINT, then SIGKILL after kill_timeout; the app's drain handler works the same here.
        'KillSignal=SIGINT',
        'KillMode=mixed',
        'TimeoutStopSec=%s' % _ms(PM2_KILL_TIMEOUT_MS if pm2['kill_timeout'] is None else pm2['kill_timeout']),
    ]
    if pm2['max_memory_restart']:
        # The kernel kills the app above this (the cgroup's OOM killer) and Restart= brings it back.
        service.append('MemoryMax=%d' % pm2['max_memory_restart'])
    return unit, service


def exec_start(spec, interpreter_path, script_path):
    pm2 = spec['pm2']
    words = []
    if interpreter_path:
        words.append(interpreter_path)
        words.extend(pm2['node_args'] or [])
    words.append(script_path)
    words.extend(pm2['args'] or [])
    return ' '.join(_quote_word(w) for w in words)


def log_lines(pm2):
    out = pm2['out_file'] or pm2['log_file']
    err = pm2['error_file'] or pm2['log_file']
    return ['StandardOutput=%s' % ('append:%s' % out if out else 'journal'),
            'StandardError=%s' % ('append:%s' % err if err else 'journal')]


HARDENING = (
    # Hardening that a Node.js server survives: no MemoryDenyWriteExecute (V8's JIT writes executable memory) and no
    # ProtectHome (apps and npm caches often live in the app user's home).
    'NoNewPrivileges=yes',
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    'ProtectSystem=full',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectKernelLogs=yes',
    'ProtectControlGroups=yes',
    'RestrictSUIDSGID=yes',
    'RestrictRealtime=yes',
    'LockPersonality=yes',
    'UMask=0027',
)


def render_unit(spec, user, group, interpreter_path, script_path):
    """The template unit's full text for a normalised spec; pure (paths resolved by the caller)."""
    pm2 = spec['pm2']
    unit_policy, service_policy = restart_policy(pm2)
    lines = [
        HEADER,
        SPEC_LINE + format_fingerprint(spec['fingerprint']),
        USER_LINE + user,
        SCRIPT_LINE + script_path,
        '[Unit]',
        'Description=%s instance %%i (nodefleet.pm2)' % spec['name'],
        'After=network-online.target',
        'Wants=network-online.target',
    ] + unit_policy + [
        '',
        '[Service]',
        'Type=exec',
        'User=%s' % user,
        'Group=%s' % group,
    ]
    if pm2['cwd']:
        lines.append('WorkingDirectory=%s' % pm2['cwd'])
    lines.append('Environment=NODE_APP_INSTANCE=%i')
    for key in sorted(spec['env']):
        lines.append('Environment=%s' % _quote_assignment(key, spec['env'][key]))
    if spec['env_file']:
        # Read by systemd (as root) at every start; the values never appear in the unit, ps or systemctl show.
        lines.append('EnvironmentFile=%s' % spec['env_file'])
    lines.append('ExecStart=%s' % exec_start(spec, interpreter_path, script_path))
    lines.extend(service_policy)
    lines.extend(log_lines(pm2))
    lines.append('SyslogIdentifier=%s' % spec['name'])
    lines.extend(HARDENING)
    lines.extend(['', '[Install]', 'WantedBy=multi-user.target', ''])
    return '\n'.join(lines)


def parse_unit(text):
    """What a unit we wrote records and says: fingerprint, user, script, cwd, err_log (empty for a foreign file)."""
    found = {'fingerprint': {}}
    for line in (text or '').splitlines():
        if line.startswith(SPEC_LINE):
            found['fingerprint'] = read_fingerprint(line[len(SPEC_LINE):])
        elif line.startswith(USER_LINE):
            found['user'] = line[len(USER_LINE):]
        elif line.startswith(SCRIPT_LINE):
            found['script'] = line[len(SCRIPT_LINE):]
        elif line.startswith('WorkingDirectory='):
            found['cwd'] = line.partition('=')[2]
        elif line.startswith('StandardError=append:'):
            found['err_log'] = line[len('StandardError=append:'):]
    return found


# --------------------------------------------------------------------------- systemctl show parser

def parse_show(text):
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


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def instance_state(index, props, enabled, release=None, err_log=None):
    """One unit instance in the same shape as a PM2 process from parse_jlist."""
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
        'err_log': err_log,
        'enabled': enabled,
        'release': release,
    }


# --------------------------------------------------------------------------- planner

RUNNING = ('online', 'launching')


def unit_reasons(recorded, wanted, text_changed):
    """Names of the changed fields of a unit (fingerprint keys), or 'unit' when only the rendering changed."""
    fields = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
    if fields:
        return fields
    return ['unit'] if text_changed else []


def plan_systemd_app(spec, actual, unit_text, env_digest_value=None, in_pm2=False):
    """Pure planner for a systemd app: desired spec + live app (or None) -> {'actions', 'reasons'}.

    Actions, in order: switch (remove the app from PM2 first: never both at once), install (write the unit +
    daemon-reload), start, restart, scale, stop, delete."""
    name, state = spec['name'], spec['state']

    def plan(actions, reasons=()):
        return {'name': name, 'actions': list(actions), 'reasons': list(reasons)}

    pre, pre_reasons = (['switch'], ['supervisor']) if in_pm2 else ([], [])
    if state == 'absent':
        # Gone from both supervisors.
        return plan(['delete'] if actual or in_pm2 else [])
    if not spec['managed']:
        if actual is None:
            if state == 'stopped':
                return plan([])
            raise SpecError('script', 'app %s does not exist, so script is required to create it' % name)
        active = [i for i in actual['instances'] if i['status'] in RUNNING]
        if state == 'stopped':
            return plan(['stop'] if active or any(i['enabled'] for i in actual['instances']) else [],
                        ['status'] if active else [])
        if state in ('restarted', 'reloaded'):
            return plan(['restart'], ['requested'])
        if state == 'started' and not active:
            return plan(['start'], ['status'])
        return plan([])

    if actual is None or actual['unit'] is None:
        if state == 'stopped':
            # Defined but not run: what PM2 gives for a stopped app that is switched over.
            return plan(pre + ['install'], pre_reasons + ['missing']) if in_pm2 else plan([])
        if state == 'present' and not in_pm2:
            return plan(['install'], ['missing'])
        return plan(pre + ['install', 'start'], pre_reasons + ['missing'])

    instances = actual['instances']
    want = spec['instances']
    text_changed = actual['unit'] != unit_text
    reasons = list(pre_reasons)
    if text_changed:
        reasons += unit_reasons(actual['fingerprint'], spec['fingerprint'], text_changed)
    active = [i for i in instances if i['status'] in RUNNING]
    if spec['release'] and any(i['release'] != spec['release'] for i in active):
        reasons.append('release')
    if spec['env_file'] and active and (env_digest_value is None or actual.get('env_digest') != env_digest_value):
        reasons.append('env_file_content')
    install = ['install'] if text_changed else []
    wanted_ids = set(range(want))
    running_ids = set(i['pm_id'] for i in active)
    enabled_ids = set(i['pm_id'] for i in instances if i['enabled'])

    if state == 'stopped':
        busy = bool(active or enabled_ids)
        return plan(pre + install + (['stop'] if busy else []), reasons if install or pre else (['status'] if active else []))
    if state == 'present' and not active:
        return plan(pre + install, reasons if install or pre else [])
    if not active:
        return plan(pre + install + ['start'], reasons + ['status'])
    scale = running_ids != wanted_ids or (state != 'present' and not wanted_ids <= enabled_ids)
    actions = pre + install
    if state in ('restarted', 'reloaded'):
        actions.append('restart')
        reasons = reasons or ['requested']
    elif reasons:
        actions.append('restart')
    if scale:
        actions.append('scale')
        reasons.append('instances')
    return plan(actions, reasons)


# --------------------------------------------------------------------------- runner

class SystemdRunner(object):
    """systemctl / journalctl with argument lists; reads unit files, /proc and our digest records."""

    def __init__(self, module):
        self.module = module
        self.calls = 0
        self.systemctl = module.get_bin_path('systemctl')
        self.journalctl = module.get_bin_path('journalctl')

    @property
    def available(self):
        return bool(self.systemctl) and os.path.isdir('/run/systemd/system')

    def require(self, field='supervisor'):
        if not self.available:
            raise SpecError(field, 'systemd is not running on this host (no /run/systemd/system or no systemctl)')
        if os.geteuid() != 0:
            raise SpecError(field, 'systemd apps are installed by root; use become: true')

    def run(self, *args):
        self.calls += 1
        rc, out, err = self.module.run_command([self.systemctl] + list(args))
        if rc != 0:
            raise Pm2Error('systemctl %s failed (rc=%s): %s' % (' '.join(args[:2]), rc, (err or out).strip()[-2000:]),
                           rc=rc, stdout=out[-2000:], stderr=err[-2000:])
        return out

    def try_run(self, *args):
        """For clean-up whose failure changes nothing (reset-failed of a unit systemd already forgot)."""
        self.calls += 1
        return self.module.run_command([self.systemctl] + list(args))[0] == 0

    def show(self, units):
        if not units:
            return {}
        return parse_show(self.run('show', '--timestamp=unix', '-p', ','.join(SHOW_PROPERTIES), '--', *units))

    def journal_tail(self, units, lines, since=None):
        if not self.journalctl:
            return []
        args = [self.journalctl, '--no-pager', '-o', 'cat', '-n', str(lines)]
        if since:
            args += ['--since', '@%d' % int(since)]
        for unit in units:
            args += ['-u', unit]
        rc, out, dummy = self.module.run_command(args)
        return out.splitlines()[-lines:] if rc == 0 else []

    # ------------------------------------------------------------- reading what the host has
    @staticmethod
    def managed_names():
        try:
            entries = os.listdir(UNIT_DIR)
        except OSError:
            return []
        return sorted(e[len(UNIT_PREFIX):-len('@.service')] for e in entries
                      if e.startswith(UNIT_PREFIX) and e.endswith('@.service'))

    @staticmethod
    def enabled_instances(name):
        try:
            entries = os.listdir(WANTS_DIR)
        except OSError:
            return set()
        found = set()
        for entry in entries:
            match = _INSTANCE_RE.match(entry)
            if match and match.group(1) == name:
                found.add(int(match.group(2)))
        return found

    def loaded_instances(self, names):
        """{name: set(index)} of the instances systemd has loaded (running, failed or recently stopped)."""
        if not names or not self.available:
            return {}
        out = self.run('list-units', '--all', '--plain', '--no-legend', '--full', '--type=service',
                       *['%s%s@*.service' % (UNIT_PREFIX, n) for n in names])
        found = {}
        for line in out.splitlines():
            parts = line.split()
            match = _INSTANCE_RE.match(parts[0]) if parts else None
            if match and match.group(1) in names:
                found.setdefault(match.group(1), set()).add(int(match.group(2)))
        return found

    @staticmethod
    def read_env_digest(name):
        try:
            with open(state_path(name)) as handle:
                return json.load(handle).get('env_digest')
        except (IOError, OSError, ValueError):
            return None

    @staticmethod
    def process_rss(pid):
        """Resident memory of the main process (bytes) where the cgroup's MemoryCurrent is not accounted."""
        try:
            with open('/proc/%d/status' % pid) as handle:
                for line in handle:
                    if line.startswith('VmRSS:'):
                        return int(line.split()[1]) * 1024
        except (IOError, OSError, ValueError, IndexError):
            pass
        return 0

    @staticmethod
    def process_release(pid):
        if not pid:
            return None
        try:
            return os.path.realpath(os.readlink('/proc/%d/cwd' % pid))
        except OSError:
            return None

    def apps(self, names=None):
        """{name: app} for our units (all of them, or the given names), shaped like parse_jlist's apps."""
        if not self.available:
            return {}
        existing = set(self.managed_names())
        names = sorted(existing if names is None else set(names))
        loaded = self.loaded_instances(names)
        indexes = dict((n, loaded.get(n, set()) | self.enabled_instances(n)) for n in names)
        props = self.show([instance_unit(n, i) for n in names for i in sorted(indexes[n])])
        apps = {}
        for name in names:
            text = None
            if name in existing:
                with open(unit_path(name)) as handle:
                    text = handle.read()
            if text is None and not indexes[name]:
                continue
            settings = parse_unit(text)
            enabled = self.enabled_instances(name)
            instances = []
            for index in sorted(indexes[name]):
                p = props.get(instance_unit(name, index), {})
                if p.get('LoadState') == 'not-found':
                    continue
                pid = _int(p.get('MainPID'))
                instance = instance_state(index, p, index in enabled, self.process_release(pid), settings.get('err_log'))
                if pid and not instance['memory']:
                    instance['memory'] = self.process_rss(pid)
                instances.append(instance)
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
                'markers': {'NODEFLEET_RELEASE': running[0] if running else None},
                'conflict': False,
                'instances': instances,
            }
        return apps
