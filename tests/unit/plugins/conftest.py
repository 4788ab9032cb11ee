# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fake host for the lifecycle tests: a PM2 daemon that answers pm2 commands the way PM2 7 does (jlist built from
a recorded PM2 7.0.4 process, fixtures/jlist_mixed.json) and a systemd that answers systemctl / journalctl (the
``systemctl show`` format recorded on the test fleet's systemd 252). Both keep state, so a run converges them and a
second run finds nothing to do; ``crash`` / ``pid0`` make apps misbehave as the fleet's crash cases do."""

from __future__ import annotations

import copy
import json
import os
import time

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils import _systemd, _systemd_supervisor, _systemd_unit

FIXTURES = os.path.join(os.path.dirname(__file__), 'module_utils', 'fixtures')


def _template():
    with open(os.path.join(FIXTURES, 'jlist_mixed.json')) as handle:
        recorded = json.load(handle)
    return next(p for p in recorded if p['name'] == 'web')


class FakePm2:
    """PM2's process list and the commands pm2_app runs against it."""

    def __init__(self, home):
        self.home = home
        self.template = _template()
        self.procs = []
        self.next_id = 0
        self.next_pid = 1000
        self.commands = []
        self.crash = {}        # name -> restarts added per jlist (a crash loop PM2 still shows online)
        self.errored = set()   # names PM2 gives up on (too many unstable restarts)
        self.pid0 = set()      # names PM2 lists online without a process
        self.log_lines = []    # written to pm2.log on the next jlist
        os.makedirs(os.path.join(home, 'logs'), exist_ok=True)
        self.set_daemon(True)

    def set_daemon(self, running):
        pid_file = os.path.join(self.home, 'pm2.pid')
        if running:
            with open(pid_file, 'w') as handle:
                handle.write(str(os.getpid()))
        elif os.path.exists(pid_file):
            os.unlink(pid_file)

    def log(self, path, text):
        with open(path, 'a') as handle:
            handle.write(text)

    # ------------------------------------------------------------- the process list
    def add(self, name, script='/srv/web/current/server.js', cwd='/srv/web/current', instances=1, mode='fork', env=None,
            status='online', restart_time=0, namespace='default', out=None, err=None):
        for dummy in range(instances):
            self.procs.append(dict(name=name, pm_id=self.next_id, pid=self.next_pid if status == 'online' else 0,
                                   status=status, restart_time=restart_time, unstable_restarts=0,
                                   pm_uptime=int(time.time() * 1000), script=script, cwd=cwd, mode=mode,
                                   namespace=namespace, env=dict(env or {}),
                                   out=out or os.path.join(self.home, 'logs', '%s-out.log' % name),
                                   err=err or os.path.join(self.home, 'logs', '%s-error.log' % name)))
            self.next_id += 1
            self.next_pid += 1

    def named(self, name):
        return [p for p in self.procs if p['name'] == name]

    def _entry(self, proc):
        entry = copy.deepcopy(self.template)
        env = entry['pm2_env']
        env.update(name=proc['name'], pm_id=proc['pm_id'], status=proc['status'], restart_time=proc['restart_time'],
                   unstable_restarts=proc['unstable_restarts'], pm_uptime=proc['pm_uptime'], pm_exec_path=proc['script'],
                   pm_cwd=proc['cwd'], exec_mode='%s_mode' % proc['mode'], namespace=proc['namespace'],
                   pm_out_log_path=proc['out'], pm_err_log_path=proc['err'])
        # PM2 keeps an app's env twice: flat in pm2_env and under pm2_env.env.
        for key in [k for k in env if k.startswith('NODEFLEET_')]:
            del env[key]
        env.update(proc['env'])
        env['env'] = dict(proc['env'])

        entry.update(name=proc['name'], pm_id=proc['pm_id'], pid=proc['pid'])
        return entry

    def jlist(self):
        crashed = False
        for proc in self.procs:
            if proc['name'] in self.crash and proc['status'] == 'online':
                proc['restart_time'] += self.crash[proc['name']]
                proc['pm_uptime'] = int(time.time() * 1000) + 1
                crashed = True
            if proc['name'] in self.errored:
                proc.update(status='errored', pid=0)
            if proc['name'] in self.pid0:
                proc['pid'] = 0
        for line in self.log_lines if crashed else []:
            self.log(os.path.join(self.home, 'pm2.log'), '2025-01-01T00:00:00: PM2 log: %s\n' % line)
        self.log_lines = [] if crashed else self.log_lines

        return json.dumps([self._entry(p) for p in self.procs])

    # ------------------------------------------------------------- commands
    def _targets(self, args):
        names = [a for a in args if not a.isdigit()]
        ids = [int(a) for a in args if a.isdigit()]
        return [p for p in self.procs if p['name'] in names or p['pm_id'] in ids]

    def _eco_app(self, args):
        with open(args[0]) as handle:
            apps = json.load(handle)['apps']
        return next(a for a in apps if a['name'] == args[args.index('--only') + 1])

    def _restart(self, procs, app=None):
        for proc in procs:
            proc.update(status='online', pid=self.next_pid, restart_time=proc['restart_time'] + 1,
                        pm_uptime=int(time.time() * 1000))
            self.next_pid += 1
            if app:
                proc['env'] = dict(app['env'])

    def start(self, args):
        app = self._eco_app(args)
        if self.named(app['name']):
            return 1, '', '[PM2][ERROR] Script already launched'
        self.add(app['name'], app['script'], app.get('cwd'), app['instances'], app.get('exec_mode', 'fork'), app['env'],
                 namespace=app.get('namespace') or 'default', out=app.get('out_file'), err=app.get('error_file'))
        return 0, '', ''

    def __call__(self, argv):
        args = argv[argv.index('/opt/node/bin/pm2') + 1:]
        self.commands.append(args)
        command, rest = args[0], args[1:]
        if command == 'jlist':
            return 0, self.jlist(), ''
        if command == 'start':
            return self.start(rest)
        if command in ('restart', 'reload'):
            eco = rest[0].endswith('.json')
            procs = self.named(self._eco_app(rest)['name']) if eco else self._targets(rest)
            if not procs:
                return 1, '', '[PM2][ERROR] Process or Namespace %s not found' % rest[0]
            self._restart(procs, self._eco_app(rest) if eco else None)
        elif command == 'stop':
            for proc in self._targets(rest):
                proc.update(status='stopped', pid=0)
        elif command == 'delete':
            gone = self._targets(rest)
            self.procs = [p for p in self.procs if p not in gone]
        elif command == 'scale':
            procs = self.named(rest[0])
            want = int(rest[1])
            if want > len(procs):
                first = procs[0]
                self.add(first['name'], first['script'], first['cwd'], want - len(procs), first['mode'], first['env'])
            else:
                self.procs = [p for p in self.procs if p not in procs[want:]]
        elif command == 'save':
            with open(os.path.join(self.home, 'dump.pm2'), 'w') as handle:
                handle.write(self.jlist())
        else:
            return 1, '', 'unknown command %s' % command
        return 0, '', ''


class FakeSystemd:
    """Unit instances as systemctl sees them; unit files and enable links in temporary directories."""

    def __init__(self, root):
        self.unit_dir = os.path.join(root, 'units')
        self.wants_dir = os.path.join(self.unit_dir, 'multi-user.target.wants')
        self.state_dir = os.path.join(root, 'state')
        os.makedirs(self.wants_dir)
        self.units = {}
        self.commands = []
        self.next_pid = 5000
        self.crash = set()
        self.journal = []      # (unit, from systemd, message)
        self.releases = {}     # pid -> real working directory

    def _unit(self, name):
        return self.units.setdefault(name, dict(active='inactive', sub='dead', pid=0, restarts=0, start=''))

    def _template(self, unit):
        return os.path.join(self.unit_dir, unit.split('@')[0] + '@.service')

    def _start(self, unit):
        state = self._unit(unit)
        with open(self._template(unit)) as handle:
            cwd = next((line.split('=', 1)[1] for line in handle.read().splitlines() if line.startswith('WorkingDirectory=')), '/')
        state.update(active='active', sub='running', pid=self.next_pid, restarts=0, start='@%d' % int(time.time()))
        self.releases[self.next_pid] = os.path.realpath(cwd)
        self.next_pid += 1

    def _stop(self, unit):
        self._unit(unit).update(active='inactive', sub='dead', pid=0)

    def show(self, units):
        blocks = []
        for unit in units:
            state = self._unit(unit)
            if unit.split('@')[0] in self.crash and state['active'] == 'active':
                state.update(restarts=state['restarts'] + 1, active='activating', sub='auto-restart', pid=0)
                self.journal.append((unit, True, '%s: Scheduled restart job, restart counter is at %d.' % (unit, state['restarts'])))
            loaded = 'loaded' if os.path.exists(self._template(unit)) else 'not-found'
            values = (unit, state['active'], state['sub'], state['pid'], state['restarts'], state['start'], loaded)
            blocks.append('Id=%s\nActiveState=%s\nSubState=%s\nMainPID=%d\nNRestarts=%d\nExecMainStartTimestamp=%s\n'
                          'MemoryCurrent=52428800\nLoadState=%s\n' % values)
        return '\n'.join(blocks)

    def systemctl(self, args):
        self.commands.append(args)
        command = args[0]
        units = [a for a in args[1:] if a.endswith('.service')]
        if command == 'show':
            return 0, self.show(units), ''
        if command == 'list-units':
            patterns = [a.split('@')[0] for a in args if a.endswith('@*.service')]
            rows = ['%s loaded %s %s x' % (u, s['active'], s['sub']) for u, s in sorted(self.units.items())
                    if u.split('@')[0] in patterns and s['active'] != 'inactive']
            return 0, '\n'.join(rows), ''
        for unit in units:
            link = os.path.join(self.wants_dir, unit)
            if command in ('restart',) or (command == 'enable' and self._unit(unit)['active'] != 'active'):
                self._start(unit)
            if command == 'enable' and not os.path.lexists(link):
                os.symlink(self._template(unit), link)
            if command == 'disable':
                self._stop(unit)
                if os.path.lexists(link):
                    os.unlink(link)
        return 0, '', ''

    def journalctl(self, args):
        units = [args[i + 1] for i, a in enumerate(args) if a == '-u']
        lines = [json.dumps({'MESSAGE': message, '_PID': '1' if own else '4242', 'SYSLOG_IDENTIFIER': 'systemd' if own else 'app'})
                 for unit, own, message in self.journal if unit in units]
        return 0, '\n'.join(lines), ''


class FakeHost:
    """A host with both supervisors; ``module(**params)`` gives a fake AnsibleModule whose commands reach them."""

    def __init__(self, root, fake_module):
        self.root = str(root)
        self.pm2_home = os.path.join(self.root, 'pm2home')
        self.pm2 = FakePm2(self.pm2_home)
        self.systemd = FakeSystemd(self.root)
        self.fake_module = fake_module
        self.commands = []
        self.command_results = []

    def handler(self, argv):
        if argv[0] == '/usr/bin/systemctl':
            return self.systemd.systemctl(argv[1:])
        if argv[0] == '/usr/bin/journalctl':
            return self.systemd.journalctl(argv[1:])
        if '/opt/node/bin/pm2' in argv:
            return self.pm2(argv)
        self.commands.append(argv)  # a health check command
        return self.command_results.pop(0) if self.command_results else (0, 'ok', '')

    def params(self, **params):
        base = dict(name=None, apps=None, save=True, executable=None, pm2_home=self.pm2_home, user=None)
        base.update(params)
        return base

    def module(self, check_mode=False, diff=False, **params):
        return self.fake_module(params=self.params(**params), check_mode=check_mode, diff=diff, handler=self.handler)


@pytest.fixture
def host(tmp_path, fake_module, monkeypatch):
    host = FakeHost(tmp_path, fake_module)
    sd = host.systemd
    for module, names in ((_systemd_unit, ('UNIT_DIR', 'WANTS_DIR', 'STATE_DIR')), (_systemd, ('UNIT_DIR', 'WANTS_DIR')),
                          (_systemd_supervisor, ('STATE_DIR',))):
        for name in names:
            monkeypatch.setattr(module, name, {'UNIT_DIR': sd.unit_dir, 'WANTS_DIR': sd.wants_dir, 'STATE_DIR': sd.state_dir}[name])
    monkeypatch.setattr(_systemd.SystemdRunner, 'available', property(lambda self: True))
    monkeypatch.setattr(_systemd.SystemdRunner, 'process_release', staticmethod(sd.releases.get))
    return host
