# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Watchdog and metrics of the apps of one host, run by systemd timers (role nodefleet.pm2.pm2_watchdog).

check    One pass (timer: every interval). Per app of this host, unless a deploy holds the app's deploy lock: look
         at its processes (any instance stopped by a signal or a debugger fails the pass) and probe its health URL
         (timeout, refused or an unexpected status fails it). After K consecutive failed passes the app is healed
         (cluster: pm2 reload, zero downtime; fork: pm2 restart; systemd: its unit instances restarted one by one),
         at most M times per window, then alerts only; every heal or give-up is alerted (webhook + mail), and so is
         the recovery. Writes the watchdog's own state as metrics for node-exporter's textfile collector.
metrics  One sample (timer): status, restarts, uptime, CPU and memory of every PM2 process of the configured users
         and every nodefleet systemd app instance, labelled with project, app, instance, supervisor and release.

Config: argv[2] or /etc/nodefleet/watchdog/config.json, 0600 root (it holds the alert secrets, which are never put
in argv, env or any other file). Stdlib only; Python 3.9+.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

# smtplib, ssl, email and urllib.request are imported where an alert is sent: a pass that sends nothing (nearly all
# of them) starts faster and uses less CPU.

CONFIG = '/etc/nodefleet/watchdog/config.json'
WATCHDOG_PROM = 'nodefleet_pm2_watchdog.prom'
METRICS_PROM = 'nodefleet_pm2.prom'
LOCK_USER = 'pm2_watchdog'
OUTBOX_MAX = 50
OUTBOX_MAX_AGE = 3600
SEND_TIMEOUT = 5
HEAL_TIMEOUT = 300
STOPPED_STATES = ('T', 't')  # stopped by a signal (SIGSTOP/SIGTSTP) or by a debugger
UNIT_RE = re.compile(r'^nodefleet-([a-z0-9][a-z0-9.-]*)@(\d+)\.service$')


def log(level, message):
    """journald reads the <N> prefix as the priority; the unit keeps only notice and above."""
    print('<%d>%s' % (level, message), flush=True)


# --------------------------------------------------------------------------- pure logic (unit-tested)

def lock_held(lock_text, mtime, now, ttl):
    """The deploy role's rule: held while time + ttl > now. A lock being written (unreadable yet) counts by mtime."""
    try:
        lock = json.loads(lock_text)
        taken = float(lock['time'])
    except (ValueError, KeyError, TypeError):
        lock, taken = {}, mtime
    return taken + ttl > now, lock


def new_state():
    return {'failures': 0, 'first_failure': None, 'last_ok': None, 'alerted': False, 'limited': False, 'held': False,
            'healthy': True, 'heals': [], 'heals_total': 0, 'alerts_total': {}, 'check': '', 'detail': ''}


def decide(state, observation, now, settings):
    """One pass for one app: the next state and what to do (None, 'heal', 'alert_limit', 'alert_down', 'recovered').

    observation: {'kind': 'held' | 'ok' | 'failing' | 'down', 'check': str, 'detail': str}.
    'down' (no process at all: stopped on purpose, or between crash restarts) is never healed: starting and
    stopping belong to the supervisor and the operator; it is alerted once per episode.
    """
    state = dict(state, heals=[t for t in state['heals'] if now - t < settings['heal_window']])
    kind = observation['kind']
    if kind == 'held':
        return dict(state, held=True, failures=0, first_failure=None), None
    state.update(held=False, check=observation.get('check', ''), detail=observation.get('detail', ''))
    if kind == 'ok':
        recovered = state['alerted']
        state.update(failures=0, first_failure=None, last_ok=now, alerted=False, limited=False, healthy=True)
        return state, ('recovered' if recovered else None)
    state.update(failures=state['failures'] + 1, healthy=False)
    if state['first_failure'] is None:
        state['first_failure'] = now
    if state['failures'] < settings['failures']:
        return state, None
    if kind == 'down':
        if state['alerted']:
            return state, None
        return dict(state, alerted=True), 'alert_down'
    if len(state['heals']) < settings['heal_limit']:
        return state, 'heal'
    if state['limited']:
        return state, None
    return dict(state, limited=True, alerted=True), 'alert_limit'


def after_heal(state, now):
    """A heal starts the count again: the next one needs K new consecutive failures."""
    return dict(state, heals=state['heals'] + [now], heals_total=state['heals_total'] + 1, failures=0,
                first_failure=None, alerted=True)


def heal_command(app, pm2_prefix):
    """The commands that heal an app (argument lists). Cluster: reload (zero downtime); fork: restart."""
    if app['supervisor'] == 'systemd':
        return [['systemctl', 'restart', unit] for unit in app['units']]
    verb = 'reload' if app['exec_mode'] == 'cluster' else 'restart'
    return [pm2_prefix + [verb, app['name']]]


def action_name(app):
    if app['supervisor'] == 'systemd':
        return 'systemctl restart'
    return 'pm2 reload' if app['exec_mode'] == 'cluster' else 'pm2 restart'


def pm2_prefix(user, pm2_bin):
    """pm2 as the app user with a clean environment, like the collection's modules run it (Pm2Runner)."""
    path = [os.path.dirname(pm2_bin), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']
    return ['runuser', '-u', user['name'], '--', 'env', '-i', 'PATH=' + ':'.join(path), 'HOME=' + user['home'],
            'PM2_HOME=' + user['pm2_home'], 'PM2_DISCRETE_MODE=true', 'LANG=C', pm2_bin]


def iso(ts):
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec='milliseconds')


def alert_payload(cfg, app, state, event, action, action_ok, now, release):
    return {
        'host': cfg['host'], 'project': cfg['project'], 'app': app['name'], 'supervisor': app['supervisor'],
        'event': event, 'check': state['check'], 'failures': state['failures'], 'action': action,
        'action_ok': action_ok, 'detail': state['detail'], 'release': release,
        'heals_in_window': len(state['heals']), 'heal_limit': cfg['heal_limit'], 'heal_window': cfg['heal_window'],
        'last_ok_at': iso(state['last_ok']), 'first_failure_at': iso(state['first_failure']), 'time': iso(now),
        'timestamp': round(now, 3),
    }


def mail_subject(payload):
    if payload['event'] == 'recovered':
        return '[nodefleet watchdog] %s %s/%s recovered' % (payload['host'], payload['project'], payload['app'])
    return '[nodefleet watchdog] %s %s/%s %s: %s failures, action %s' % (
        payload['host'], payload['project'], payload['app'], payload['event'], payload['failures'], payload['action'])


def escape_label(value):
    return str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def render_prom(families):
    """families: [(name, type, help, [(labels dict, value)])] -> Prometheus text exposition format."""
    lines = []
    for name, kind, text, samples in families:
        if not samples:
            continue
        lines.append('# HELP %s %s' % (name, text))
        lines.append('# TYPE %s %s' % (name, kind))
        for labels, value in samples:
            inner = ','.join('%s="%s"' % (k, escape_label(v)) for k, v in sorted(labels.items()))
            lines.append('%s%s %s' % (name, '{%s}' % inner if inner else '', repr(float(value))))
    return '\n'.join(lines) + '\n'


def watchdog_families(cfg, states, run):
    families = []

    def per_app(name, kind, text, key):
        samples = []
        for app in cfg['apps']:
            state = states.get(app['name'], new_state())
            samples.append(({'project': cfg['project'], 'app': app['name'], 'supervisor': app['supervisor']},
                            key(state)))
        families.append((name, kind, text, samples))

    per_app('nodefleet_pm2_watchdog_healthy', 'gauge', 'Whether the last pass found the app healthy (held: 1).',
            lambda s: 1 if s['healthy'] or s['held'] else 0)
    per_app('nodefleet_pm2_watchdog_failures', 'gauge', 'Consecutive failed passes.', lambda s: s['failures'])
    per_app('nodefleet_pm2_watchdog_held', 'gauge', 'Whether a deploy holds the app\'s lock (the watchdog holds off).',
            lambda s: 1 if s['held'] else 0)
    per_app('nodefleet_pm2_watchdog_heal_limited', 'gauge', 'Whether the heal limit is reached (alerts only).',
            lambda s: 1 if s['limited'] else 0)
    per_app('nodefleet_pm2_watchdog_heals_total', 'counter', 'Heals done by the watchdog.', lambda s: s['heals_total'])
    alerts = []
    for app in cfg['apps']:
        for event, count in sorted(states.get(app['name'], new_state())['alerts_total'].items()):
            alerts.append(({'project': cfg['project'], 'app': app['name'], 'event': event}, count))
    families.append(('nodefleet_pm2_watchdog_alerts_total', 'counter', 'Alerts raised, by event.', alerts))
    families.append(('nodefleet_pm2_watchdog_alert_errors_total', 'counter', 'Failed alert deliveries, by channel.',
                     [({'channel': c}, n) for c, n in sorted(run['alert_errors'].items())]))
    families.append(('nodefleet_pm2_watchdog_alerts_pending', 'gauge', 'Alerts waiting for a retry.',
                     [({}, run['pending'])]))
    families.append(('nodefleet_pm2_watchdog_interval_seconds', 'gauge', 'Seconds between passes.',
                     [({}, cfg['interval'])]))
    families.append(('nodefleet_pm2_watchdog_failures_threshold', 'gauge', 'Consecutive failures before a heal (K).',
                     [({}, cfg['failures'])]))
    families.append(('nodefleet_pm2_watchdog_last_run_timestamp_seconds', 'gauge', 'End of the last pass.',
                     [({}, run['end'])]))
    families.append(('nodefleet_pm2_watchdog_run_duration_seconds', 'gauge', 'Wall time of the last pass.',
                     [({}, run['end'] - run['start'])]))
    families.append(('nodefleet_pm2_watchdog_run_cpu_seconds', 'gauge', 'CPU time of the last pass (with children).',
                     [({}, run['cpu'])]))
    families.append(('nodefleet_pm2_watchdog_run_max_rss_bytes', 'gauge', 'Peak resident memory of the last pass.',
                     [({}, run['max_rss'])]))
    return families


def pm2_samples(processes, cfg, user, release):
    """pm2 jlist entries (PM2 modules left out) -> [(labels, fields)]; fields read from /proc by the caller."""
    project_apps = set(cfg['project_apps'])
    samples = []
    for proc in processes:
        env = proc.get('pm2_env') or {}
        if env.get('pmx_module'):
            continue
        name = proc.get('name', '')
        mine = name in project_apps
        labels = {'project': cfg['project'] if mine else '', 'app': name,
                  'app_instance': str(env.get('NODE_APP_INSTANCE', proc.get('pm_id', ''))), 'supervisor': 'pm2',
                  'release': release if mine else '', 'user': user,
                  'exec_mode': 'cluster' if env.get('exec_mode') == 'cluster_mode' else 'fork'}
        fields = {'status': env.get('status', 'unknown'), 'pid': proc.get('pid') or 0,
                  'restarts': env.get('restart_time', 0) or 0,
                  'max_memory': env.get('max_memory_restart') or 0}
        samples.append((labels, fields))
    return samples


def parse_systemctl_show(text):
    """`systemctl show -p ... UNIT...` output (blocks separated by blank lines) -> [dict]."""
    units = []
    for block in text.strip().split('\n\n'):
        props = dict(line.split('=', 1) for line in block.splitlines() if '=' in line)
        if props.get('Id'):
            units.append(props)
    return units


def systemd_status(props):
    table = {('active', 'running'): 'online', ('activating', 'auto-restart'): 'waiting restart',
             ('activating', 'start'): 'launching', ('failed', 'failed'): 'errored', ('inactive', 'dead'): 'stopped'}
    return table.get((props.get('ActiveState'), props.get('SubState')), props.get('ActiveState', 'unknown'))


def systemd_samples(units, cfg, release):
    project_apps = set(cfg['project_apps'])
    samples = []
    for props in units:
        match = UNIT_RE.match(props['Id'])
        if not match:
            continue
        name, index = match.groups()
        mine = name in project_apps
        limit = props.get('MemoryMax', '')
        labels = {'project': cfg['project'] if mine else '', 'app': name, 'app_instance': index,
                  'supervisor': 'systemd', 'release': release if mine else '', 'user': props.get('User', ''),
                  'exec_mode': 'fork'}
        fields = {'status': systemd_status(props), 'pid': int(props.get('MainPID') or 0),
                  'restarts': int(props.get('NRestarts') or 0),
                  'max_memory': int(limit) if limit.isdigit() else 0}
        samples.append((labels, fields))
    return samples


def process_families(samples, read_proc, now):
    """[(labels, fields)] + a /proc reader (pid -> {'cpu', 'rss', 'start'} or None) -> metric families."""
    up, status, restarts, uptime, cpu, memory, limits = [], [], [], [], [], [], []
    for labels, fields in samples:
        info = read_proc(fields['pid']) if fields['pid'] else None
        online = fields['status'] == 'online' and info is not None
        up.append((labels, 1 if online else 0))
        status.append((dict(labels, status=fields['status']), 1))
        restarts.append((labels, fields['restarts']))
        if info is not None:
            uptime.append((labels, max(0.0, now - info['start'])))
            cpu.append((labels, info['cpu']))
            memory.append((labels, info['rss']))
        if fields['max_memory']:
            limits.append((labels, fields['max_memory']))
    return [
        ('nodefleet_pm2_process_up', 'gauge', 'Whether the process is online under its supervisor.', up),
        ('nodefleet_pm2_process_status', 'gauge', 'Status of the process as PM2 names it (1 for the current one).',
         status),
        ('nodefleet_pm2_process_restarts_total', 'counter', 'Restarts counted by the supervisor.', restarts),
        ('nodefleet_pm2_process_uptime_seconds', 'gauge', 'Seconds since the process started.', uptime),
        ('nodefleet_pm2_process_cpu_seconds_total', 'counter', 'CPU time used by the process.', cpu),
        ('nodefleet_pm2_process_memory_bytes', 'gauge', 'Resident memory of the process.', memory),
        ('nodefleet_pm2_process_max_memory_bytes', 'gauge', 'max_memory_restart (PM2) or MemoryMax (systemd).',
         limits),
    ]


# --------------------------------------------------------------------------- the host

def run_usage():
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return cpu, max(own.ru_maxrss, children.ru_maxrss) * 1024


def write_textfile(directory, name, text):
    """Atomic, as the textfile collector asks: never a half-written file."""
    if not directory or not os.path.isdir(directory):
        return
    tmp = os.path.join(directory, '.%s.%d' % (name, os.getpid()))
    with open(tmp, 'w', encoding='utf-8') as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(directory, name))


def current_release(deploy_to):
    try:
        return os.path.basename(os.readlink(os.path.join(deploy_to, 'current')).rstrip('/'))
    except OSError:
        return ''


def read_proc(pid):
    """CPU seconds, resident bytes and start time of a live process, from /proc; None when it is gone."""
    try:
        with open('/proc/%d/stat' % pid, encoding='utf-8') as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
        with open('/proc/%d/statm' % pid, encoding='utf-8') as handle:
            resident = int(handle.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    ticks = os.sysconf('SC_CLK_TCK')
    with open('/proc/stat', encoding='utf-8') as handle:
        boot = int(next(line for line in handle if line.startswith('btime')).split()[1])
    # Fields after the command: state is [0], utime [11], stime [12], starttime [19].
    return {'state': fields[0], 'cpu': (int(fields[11]) + int(fields[12])) / ticks,
            'rss': resident * os.sysconf('SC_PAGE_SIZE'), 'start': boot + int(fields[19]) / ticks}


def process_state(pid):
    info = read_proc(pid)
    return info['state'] if info else None


def pm2_pids(user, name):
    """Live pids of an app from PM2's pid files (<PM2_HOME>/pids/<name>-<pm_id>.pid, removed when a process exits)."""
    pattern = re.compile(r'^%s-(\d+)\.pid$' % re.escape(name))
    directory = os.path.join(user['pm2_home'], 'pids')
    found = []
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return found
    for entry in entries:
        match = pattern.match(entry)
        if not match:
            continue
        try:
            with open(os.path.join(directory, entry), encoding='utf-8') as handle:
                pid = int(handle.read().strip() or 0)
        except (OSError, ValueError):
            continue
        if pid > 0 and os.path.exists('/proc/%d' % pid):
            found.append(('pm_id %s' % match.group(1), pid))
    return found


def systemctl_show(patterns, properties):
    out = subprocess.run(['systemctl', 'show', '-p', ','.join(properties)] + patterns, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, universal_newlines=True, check=False, timeout=30).stdout
    return parse_systemctl_show(out)


def systemd_pids(name):
    units = systemctl_show(['nodefleet-%s@*.service' % name], ['Id', 'MainPID', 'ActiveState'])
    return [(u['Id'], int(u['MainPID'])) for u in units if u.get('ActiveState') == 'active' and int(u['MainPID'] or 0)]


def probe(app):
    """One HTTP probe; (ok, detail)."""
    parts = urllib.parse.urlsplit(app['url'])
    connection = http.client.HTTPSConnection if parts.scheme == 'https' else http.client.HTTPConnection
    target = (parts.path or '/') + ('?' + parts.query if parts.query else '')
    client = connection(parts.hostname, parts.port, timeout=app['timeout'])
    try:
        client.request('GET', target, headers={'User-Agent': 'nodefleet-pm2-watchdog', 'Connection': 'close'})
        status = client.getresponse().status
    except socket.timeout:
        return False, 'GET %s: no answer within %s s' % (app['url'], app['timeout'])
    except (OSError, http.client.HTTPException) as exc:
        return False, 'GET %s: %s' % (app['url'], exc)
    finally:
        client.close()
    if status != app['status']:
        return False, 'GET %s: HTTP %s, expected %s' % (app['url'], status, app['status'])
    return True, 'GET %s: HTTP %s' % (app['url'], status)


def observe_all(observe, apps):
    """Every app at once (a hung probe costs its timeout once per pass, not once per app)."""
    results = [None] * len(apps)

    def one(index):
        results[index] = observe(apps[index])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(apps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class Host(object):
    """Everything the check pass does on the host, in one place (the pure decisions are above)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.users = {u['name']: u for u in cfg['users']}
        self.state_path = os.path.join(cfg['state_dir'], 'state.json')

    def lock_path(self, name):
        return os.path.join(self.cfg['lock_dir'], '%s.%s.lock' % (self.cfg['project'], name))

    def read_lock(self, name):
        path = self.lock_path(name)
        try:
            with open(path, encoding='utf-8') as handle:
                text = handle.read()
            mtime = os.stat(path).st_mtime
        except OSError:
            return False, {}
        return lock_held(text, mtime, time.time(), self.cfg['lock_ttl'])

    def observe(self, app):
        held, lock = self.read_lock(app['name'])
        if held:
            return {'kind': 'held', 'detail': 'deploy lock of %s@%s since %s' % (
                lock.get('user', '?'), lock.get('controller', '?'), lock.get('started', lock.get('time', '?')))}
        if app['supervisor'] == 'systemd':
            procs = systemd_pids(app['name'])
        else:
            procs = pm2_pids(self.users[app['user']], app['name'])
        if not procs:
            return {'kind': 'down', 'check': 'process',
                    'detail': 'no process of %s runs under %s' % (app['name'], app['supervisor'])}
        checks, details = [], []
        stopped = [(instance, pid) for instance, pid in procs if process_state(pid) in STOPPED_STATES]
        if stopped:
            checks.append('instances')
            details.extend('%s (pid %d) is stopped (SIGSTOP or a debugger)' % item for item in stopped)
        ok, detail = probe(app)
        if not ok:
            checks.append('http')
        details.append(detail)
        return {'kind': 'failing' if checks else 'ok', 'check': ','.join(checks), 'detail': '; '.join(details)}

    def own_lock(self, name):
        """Take the app's deploy lock for the heal, so that a deploy starting meanwhile is refused, not raced."""
        os.makedirs(self.cfg['lock_dir'], mode=0o755, exist_ok=True)
        now = time.time()
        lock = {'token': 'pm2_watchdog-%s-%d-%d' % (self.cfg['host'], os.getpid(), int(now * 1000)), 'time': int(now),
                'user': LOCK_USER, 'controller': self.cfg['host'], 'pid': 0, 'started': iso(now)}
        try:
            fd = os.open(self.lock_path(name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            json.dump(lock, handle)
        return lock['token']

    def drop_lock(self, name, token):
        path = self.lock_path(name)
        try:
            with open(path, encoding='utf-8') as handle:
                if json.load(handle).get('token') == token:
                    os.unlink(path)
        except (OSError, ValueError):
            pass

    def drop_leftover_locks(self):
        """Locks of this host's watchdog left by a pass that was killed mid-heal (only one pass runs at a time)."""
        for app in self.cfg['apps']:
            try:
                with open(self.lock_path(app['name']), encoding='utf-8') as handle:
                    lock = json.load(handle)
            except (OSError, ValueError):
                continue
            if lock.get('user') == LOCK_USER and lock.get('controller') == self.cfg['host']:
                self.drop_lock(app['name'], lock.get('token'))

    def heal(self, app):
        """(ok, detail). Runs as the app user with its PM2_HOME, or systemctl for systemd apps."""
        if app['supervisor'] == 'systemd':
            app = dict(app, units=sorted(u for u, _pid in systemd_pids(app['name'])) or
                       ['nodefleet-%s@0.service' % app['name']])
        prefix = pm2_prefix(self.users[app['user']], self.cfg['pm2_bin']) if app['supervisor'] == 'pm2' else []
        token = self.own_lock(app['name'])
        if token is None:
            return None, 'a deploy took the lock just now; not healed'
        try:
            for argv in heal_command(app, prefix):
                try:
                    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=HEAL_TIMEOUT,
                                          universal_newlines=True, check=False, cwd='/')
                except (OSError, subprocess.TimeoutExpired) as exc:
                    return False, '%s: %s' % (' '.join(argv[-2:]), exc)
                if done.returncode != 0:
                    return False, '%s failed (rc %d): %s' % (' '.join(argv[-2:]), done.returncode, done.stdout[-500:])
        finally:
            self.drop_lock(app['name'], token)
        return True, 'done'

    # ---------------------------------------------------------------- alerts

    def send_webhook(self, payload):
        import urllib.request  # pylint: disable=import-outside-toplevel
        hook = self.cfg['webhook']
        headers = {'Content-Type': 'application/json', 'User-Agent': 'nodefleet-pm2-watchdog'}
        if hook.get('token'):
            headers['Authorization'] = 'Bearer ' + hook['token']
        request = urllib.request.Request(hook['url'], data=json.dumps(payload).encode(), headers=headers, method='POST')
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT) as reply:
            reply.read()

    def send_mail(self, payload):
        import email.message  # pylint: disable=import-outside-toplevel
        import email.utils  # pylint: disable=import-outside-toplevel
        import smtplib  # pylint: disable=import-outside-toplevel
        import ssl  # pylint: disable=import-outside-toplevel
        mail = self.cfg['mail']
        message = email.message.EmailMessage()
        message['From'] = mail['from']
        message['To'] = ', '.join(mail['to'])
        message['Subject'] = mail_subject(payload)
        message['Date'] = email.utils.formatdate(localtime=False)
        message['Message-ID'] = email.utils.make_msgid(domain=self.cfg['host'])
        message.set_content(''.join('%s: %s\n' % (k, payload[k]) for k in sorted(payload)))
        if mail['tls'] == 'ssl':
            client = smtplib.SMTP_SSL(mail['host'], mail['port'], timeout=SEND_TIMEOUT,
                                      context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(mail['host'], mail['port'], timeout=SEND_TIMEOUT)
        with client:
            client.ehlo(self.cfg['host'])
            if mail['tls'] == 'starttls':
                client.starttls(context=ssl.create_default_context())
                client.ehlo(self.cfg['host'])
            if mail.get('user'):
                client.login(mail['user'], mail.get('password', ''))
            client.send_message(message)

    def channels(self):
        found = []
        if self.cfg['webhook'].get('url'):
            found.append(('webhook', self.send_webhook))
        if self.cfg['mail'].get('to'):
            found.append(('mail', self.send_mail))
        return found

    def deliver(self, outbox, errors):
        """Send what is in the outbox; what fails stays for the next pass (a bounded number of times)."""
        senders = dict(self.channels())
        kept = []
        for entry in outbox:
            send = senders.get(entry['channel'])
            if send is None:
                continue
            try:
                send(entry['payload'])
            except Exception as exc:  # pylint: disable=broad-except  # any failure to deliver: keep it for later
                errors[entry['channel']] = errors.get(entry['channel'], 0) + 1
                entry['tries'] += 1
                log(4, 'alert via %s for %s not delivered (try %d): %s' % (
                    entry['channel'], entry['payload']['app'], entry['tries'], exc))
                if time.time() - entry['queued'] < OUTBOX_MAX_AGE:
                    kept.append(entry)
        return kept[-OUTBOX_MAX:]

    # ---------------------------------------------------------------- the pass

    def load_state(self):
        try:
            with open(self.state_path, encoding='utf-8') as handle:
                return json.load(handle)
        except (OSError, ValueError):
            return {'apps': {}, 'outbox': [], 'alert_errors': {}}

    def save_state(self, state):
        os.makedirs(self.cfg['state_dir'], mode=0o755, exist_ok=True)
        tmp = self.state_path + '.tmp'
        with open(tmp, 'w', encoding='utf-8') as handle:
            json.dump(state, handle)
        os.replace(tmp, self.state_path)

    def step(self, app, before, observation, settings, release):
        """Decide, act (heal), log the transitions; returns the new state and the alert to send, if any."""
        name = app['name']
        state, todo = decide(before, observation, time.time(), settings)
        if state['held'] != before['held']:
            log(5, '%s: holding off, %s' % (name, observation['detail']) if state['held']
                else '%s: deploy lock released, watching again' % name)
        if state['failures'] == 1:
            log(5, '%s: failing (%s): %s' % (name, state['check'], state['detail']))
        if todo is None:
            return state, None
        if todo == 'recovered':
            log(5, '%s: recovered: %s' % (name, state['detail']))
            alerted = dict(before, check=state['check'], detail=state['detail'])
            return state, alert_payload(self.cfg, app, alerted, 'recovered', 'none', None, time.time(), release)
        if todo == 'alert_down':
            log(4, '%s: %s' % (name, state['detail']))
            action, action_ok = 'none: no process is running; left to its supervisor', None
        elif todo == 'alert_limit':
            log(3, '%s: heal limit reached, alerting only: %s' % (name, state['detail']))
            action, action_ok = 'none: heal limit reached (%d per %d s)' % (
                self.cfg['heal_limit'], self.cfg['heal_window']), None
        else:
            started = time.time()
            action_ok, detail = self.heal(app)
            action = action_name(app)
            if action_ok is None:  # a deploy took the lock between the observation and the heal: it wins
                log(5, '%s: %s' % (name, detail))
                return dict(state, held=True, failures=0, first_failure=None), None
            log(4 if action_ok else 3, '%s: %s after %d failures: %s' % (name, action, state['failures'], detail))
            state = dict(state, detail='%s; %s: %s' % (state['detail'], action, detail))
            payload = alert_payload(self.cfg, app, state, 'failing', action, action_ok, time.time(), release)
            payload.update(heal_seconds=round(time.time() - started, 3), heals_in_window=len(state['heals']) + 1)
            return after_heal(state, time.time()), payload
        return state, alert_payload(self.cfg, app, state, 'failing', action, action_ok, time.time(), release)

    def check(self):
        start = time.time()
        store = self.load_state()
        self.drop_leftover_locks()
        apps = self.cfg['apps']
        observations = observe_all(self.observe, apps)
        release = current_release(self.cfg['deploy_to'])
        settings = {k: self.cfg[k] for k in ('failures', 'heal_limit', 'heal_window')}
        for app, observation in zip(apps, observations):
            before = dict(new_state(), **store['apps'].get(app['name'], {}))
            state, payload = self.step(app, before, observation, settings, release)
            if payload:
                state['alerts_total'] = dict(state['alerts_total'])
                state['alerts_total'][payload['event']] = state['alerts_total'].get(payload['event'], 0) + 1
                for channel, _send in self.channels():
                    store['outbox'].append({'channel': channel, 'payload': payload, 'tries': 0, 'queued': time.time()})
            store['apps'][app['name']] = state
        errors = store.setdefault('alert_errors', {})
        store['outbox'] = self.deliver(store['outbox'], errors)
        store['apps'] = {a['name']: store['apps'][a['name']] for a in apps}
        self.save_state(store)
        cpu, max_rss = run_usage()
        run = {'start': start, 'end': time.time(), 'cpu': cpu, 'max_rss': max_rss, 'alert_errors': errors,
               'pending': len(store['outbox'])}
        text = render_prom(watchdog_families(self.cfg, store['apps'], run))
        write_textfile(self.cfg['textfile_dir'], WATCHDOG_PROM, text)

    # ---------------------------------------------------------------- metrics

    def pm2_jlist(self, user):
        """[] when the user's PM2 daemon is not running: any pm2 command would start one."""
        try:
            with open(os.path.join(user['pm2_home'], 'pm2.pid'), encoding='utf-8') as handle:
                os.kill(int(handle.read().strip()), 0)
        except (OSError, ValueError):
            return None
        done = subprocess.run(pm2_prefix(user, self.cfg['pm2_bin']) + ['jlist'], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, universal_newlines=True, check=False, timeout=60, cwd='/')
        if done.returncode != 0:
            return None
        return json.loads(done.stdout)

    def metrics(self):
        start = time.time()
        release = current_release(self.cfg['deploy_to'])
        samples, daemons = [], []
        for user in self.cfg['users']:
            try:
                processes = self.pm2_jlist(user)
            except ValueError:
                processes = None
            daemons.append(({'user': user['name']}, 0 if processes is None else 1))
            samples.extend(pm2_samples(processes or [], self.cfg, user['name'], release))
        units = subprocess.run(['systemctl', 'list-units', '--all', '--plain', '--no-legend', 'nodefleet-*@*.service'],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True,
                               check=False, timeout=30).stdout.split()
        units = [u for u in units if UNIT_RE.match(u)]
        if units:
            props = ['Id', 'ActiveState', 'SubState', 'MainPID', 'NRestarts', 'User', 'MemoryMax']
            samples.extend(systemd_samples(systemctl_show(units, props), self.cfg, release))
        families = process_families(samples, read_proc, time.time())
        families.append(('nodefleet_pm2_daemon_up', 'gauge', 'Whether the PM2 daemon of the user answers.', daemons))
        families.append(('nodefleet_pm2_release_info', 'gauge', 'The release the current symlink points at.',
                         [({'project': self.cfg['project'], 'release': release}, 1)] if release else []))
        cpu, max_rss = run_usage()
        families.extend([
            ('nodefleet_pm2_metrics_last_run_timestamp_seconds', 'gauge', 'End of the last sample.', [({}, time.time())]),
            ('nodefleet_pm2_metrics_run_duration_seconds', 'gauge', 'Wall time of the last sample.',
             [({}, time.time() - start)]),
            ('nodefleet_pm2_metrics_run_cpu_seconds', 'gauge', 'CPU time of the last sample (with pm2 jlist).',
             [({}, cpu)]),
            ('nodefleet_pm2_metrics_run_max_rss_bytes', 'gauge', 'Peak resident memory of the last sample.',
             [({}, max_rss)]),
        ])
        write_textfile(self.cfg['textfile_dir'], METRICS_PROM, render_prom(families))


def load_config(path):
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


def main(argv):
    if len(argv) < 2 or argv[1] not in ('check', 'metrics'):
        sys.stderr.write('usage: pm2_watchdog.py check|metrics [CONFIG]\n')
        return 2
    host = Host(load_config(argv[2] if len(argv) > 2 else CONFIG))
    if argv[1] == 'check':
        host.check()
    else:
        host.metrics()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
