# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""What this collection knows of the pm2 CLI: the runner, the ``pm2 jlist`` parser, the markers it records in an
app's PM2 env, the ecosystem file entry of a spec and the env-file preload."""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import pwd
import re
from typing import Any, Dict, List, Optional

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error, SpecError
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import format_fingerprint

App = Dict[str, Any]

# Secret-free markers in each process's PM2 env: what pm2_app started it with.
MARKER_SPEC = 'NODEFLEET_SPEC'
MARKER_RELEASE = 'NODEFLEET_RELEASE'
MARKER_ENV_DIGEST = 'NODEFLEET_ENV_DIGEST'
MARKER_ENV_FILE = 'NODEFLEET_ENV_FILE'
MARKERS = (MARKER_SPEC, MARKER_RELEASE, MARKER_ENV_DIGEST, MARKER_ENV_FILE)
RUNNING_STATUSES = ('online', 'launching')

# Node preload installed as $PM2_HOME/nodefleet/env-preload.cjs and loaded with `node --require`.
# It reads the env file named by NODEFLEET_ENV_FILE at every process start, so secrets never enter PM2's
# records and a reload sees changed and removed variables alike.
ENV_PRELOAD_JS = r"""'use strict';
// Managed by nodefleet.pm2 - loads NODEFLEET_ENV_FILE into the app's environment at every process start.
// Fork mode: the app's env is already in process.env. Cluster mode: PM2 hands a worker its env as the JSON in
// process.env.pm2_env and copies it into process.env only after this preload, so the values go into that JSON.
const fs = require('fs');
let packed = null;
if (process.env.pm2_env) {
  try { packed = JSON.parse(process.env.pm2_env); } catch (e) { packed = null; }
}
const file = process.env.NODEFLEET_ENV_FILE || (packed && (packed.NODEFLEET_ENV_FILE || (packed.env && packed.env.NODEFLEET_ENV_FILE)));
// The grammar of systemd's EnvironmentFile=, so one env file means the same under either supervisor: '#'/';'
// comments; "double quotes" (\" \\ \` \$ unescaped, other backslashes kept, newlines kept); 'single quotes'
// literal; unquoted values lose trailing blanks; no variable expansion; invalid names are skipped.
function parseEnvFile(text) {
  const values = {};
  const n = text.length;
  let i = 0;
  while (i < n) {
    while (i < n && ' \t\r\n'.includes(text[i])) i++;
    if (i >= n) break;
    if (text[i] === '#' || text[i] === ';') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    let j = i;
    while (j < n && text[j] !== '=' && text[j] !== '\n') j++;
    if (j >= n || text[j] !== '=') { i = j; continue; }
    const key = text.slice(i, j).trim();
    i = j + 1;
    while (i < n && (text[i] === ' ' || text[i] === '\t')) i++;
    let value = '';
    let kept = 0;
    while (i < n && text[i] !== '\n') {
      const c = text[i];
      if (c === "'") {
        const close = text.indexOf("'", i + 1);
        const end = close < 0 ? n : close;
        value += text.slice(i + 1, end);
        i = end + 1;
        kept = value.length;
        while (i < n && (text[i] === ' ' || text[i] === '\t')) i++;
      } else if (c === '"') {
        i++;
        while (i < n && text[i] !== '"') {
          if (text[i] === '\\' && i + 1 < n) {
            const d = text[i + 1];
            if ('"\\`$'.includes(d)) value += d;
            else if (d !== '\n') value += '\\' + d;
            i += 2;
          } else {
            value += text[i++];
          }
        }
        i++;
        kept = value.length;
        while (i < n && (text[i] === ' ' || text[i] === '\t')) i++;
      } else if (c === '\\') {
        if (i + 1 < n && text[i + 1] !== '\n') value += text[i + 1];
        i += 2;
        kept = value.length;
      } else {
        value += c;
        i++;
        if (!' \t\r'.includes(c)) kept = value.length;
      }
    }
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) values[key] = value.slice(0, kept);
  }
  return values;
}
if (file) {
  const values = parseEnvFile(fs.readFileSync(file, 'utf8'));
  Object.assign(process.env, values);
  if (packed) {
    Object.assign(packed, values);
    process.env.pm2_env = JSON.stringify(packed);
  }
}
"""


# --------------------------------------------------------------------------- jlist parser

def extract_json_array(text: str) -> List[Any]:
    """Return the JSON array in pm2 output, skipping any banner or daemon start lines before it."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r'^\s*\[', text, re.MULTILINE):
        start = text.index('[', match.start())
        try:
            value, _end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, list):
            return value
    raise Pm2Error('could not find the JSON process list in pm2 jlist output', stdout=text[-2000:])


def _marker(pm2_env: Dict[str, Any], key: str) -> Optional[str]:
    env = pm2_env.get('env') or {}
    value = env.get(key, pm2_env.get(key))
    return value if isinstance(value, str) else None


def _instance(proc: Dict[str, Any], pm2_env: Dict[str, Any]) -> Dict[str, Any]:
    monit = proc.get('monit') or {}
    markers = {k: _marker(pm2_env, k) for k in MARKERS}
    return {
        'pm_id': proc.get('pm_id', pm2_env.get('pm_id')),
        'pid': proc.get('pid') or 0,
        'status': pm2_env.get('status'),
        'restart_time': pm2_env.get('restart_time') or 0,
        'unstable_restarts': pm2_env.get('unstable_restarts') or 0,
        'pm_uptime': pm2_env.get('pm_uptime') or 0,
        'memory': monit.get('memory') or 0,
        'cpu': monit.get('cpu') or 0,
        'out_log': pm2_env.get('pm_out_log_path'),
        'err_log': pm2_env.get('pm_err_log_path'),
        # Per process: an interrupted reload leaves instances of one app on different releases and specs.
        'release': markers[MARKER_RELEASE],
        'markers': markers,
    }


def parse_jlist(text: str) -> Dict[str, App]:
    """Parse ``pm2 jlist`` output into {name: app}, dropping PM2 modules and every env value but our markers."""
    apps: Dict[str, App] = {}
    for proc in extract_json_array(text):
        pm2_env = proc.get('pm2_env') or {}
        if pm2_env.get('pmx_module'):
            continue
        name = proc.get('name', pm2_env.get('name'))
        instance = _instance(proc, pm2_env)
        identity = (pm2_env.get('pm_exec_path'), 'cluster' if pm2_env.get('exec_mode') == 'cluster_mode' else 'fork')
        app = apps.get(name)
        if app is None:
            app = apps[name] = {
                'name': name,
                'script': identity[0],
                'exec_mode': identity[1],
                'cwd': pm2_env.get('pm_cwd'),
                'namespace': pm2_env.get('namespace') or 'default',
                'interpreter': pm2_env.get('exec_interpreter'),
                'version': pm2_env.get('version'),
                'markers': instance['markers'],
                'recorded_release': instance['release'],
                'conflict': False,
                'instances': [],
            }
        elif (app['script'], app['exec_mode']) != identity:
            app['conflict'] = True
        app['instances'].append(instance)
    for app in apps.values():
        app['instances'].sort(key=lambda i: i['pm_id'] if isinstance(i['pm_id'], int) else -1)
    return apps


def is_running(instance: Dict[str, Any]) -> bool:
    """Online with a process: PM2 can list an app as online with pid 0 when it never ran."""
    return instance['status'] == 'online' and bool(instance['pid'])


# --------------------------------------------------------------------------- what PM2 is given

def env_digest(key: bytes, content: bytes) -> str:
    """Keyed digest of env-file content, safe to store in PM2's (readable) records."""
    return hmac.new(key, content, hashlib.sha256).hexdigest()


def ecosystem_app(spec: Dict[str, Any], env_digest_value: Optional[str] = None, preload: Optional[str] = None) -> Dict[str, Any]:
    """The app entry for the ecosystem file: PM2 options, user env and our secret-free markers."""
    app = {k: v for k, v in spec['pm2'].items() if v is not None}
    app['name'] = spec['name']
    app['instances'] = spec['instances']
    env = dict(spec['env'])
    env[MARKER_SPEC] = format_fingerprint(spec['fingerprint'])
    if spec['release']:
        env[MARKER_RELEASE] = spec['release']
    if spec['env_file']:
        env[MARKER_ENV_FILE] = spec['env_file']
        env[MARKER_ENV_DIGEST] = env_digest_value or ''
        app['node_args'] = ['--require', preload] + list(app.get('node_args') or [])
    app['env'] = env
    return app


# --------------------------------------------------------------------------- processes PM2 lost track of

def child_pids(parent: int) -> List[int]:
    """The processes whose parent is ``parent`` (from /proc; empty when it cannot be read)."""
    children = []
    try:
        entries = os.listdir('/proc')
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(')') + 2:].split()  # the command name may hold spaces and parentheses
        if len(fields) > 1 and fields[1] == str(parent):
            children.append(int(entry))
    return sorted(children)


def pm2_identity(pid: int) -> Optional[tuple]:
    """(app name, pm_id) that PM2 gave a process it started, from the process's environment: cluster workers carry
    pm2_env (JSON), fork-mode processes name and pm_id. None when unreadable or not started by PM2. Only these two
    fields are kept; the rest of that environment (the app's env, secrets included) is never returned."""
    try:
        with open('/proc/%d/environ' % pid, 'rb') as handle:
            raw = handle.read()
    except OSError:
        return None
    found = {}
    for item in raw.split(b'\0'):
        key, sep, value = item.partition(b'=')
        if sep and key in (b'pm2_env', b'name', b'pm_id'):
            found[key] = value.decode('utf-8', 'replace')
    if b'pm2_env' in found:
        try:
            pm2_env = json.loads(found[b'pm2_env'])
        except ValueError:
            return None
        if isinstance(pm2_env, dict) and 'name' in pm2_env:
            return str(pm2_env['name']), str(pm2_env.get('pm_id'))
        return None
    if b'name' in found and b'pm_id' in found:
        return found[b'name'], found[b'pm_id']
    return None


def find_strays(first: List[int], second: List[int], listed: set, identity, names: set) -> Dict[str, List[int]]:
    """app name -> pids of the daemon's children that run one of ``names`` but that PM2 does not list: a worker PM2
    lost track of (pm2 issues #6129, #5389) keeps taking its share of a cluster's connections with
    the code it started with, and `pm2 delete` never reaches it. ``first`` and ``second`` are two reads of the
    children around the read of PM2's list (``listed``): a process forked between them is PM2's and is listed."""
    strays: Dict[str, List[int]] = {}
    for pid in sorted(set(first) & set(second) - set(listed)):
        who = identity(pid)
        if who and who[0] in names:
            strays.setdefault(who[0], []).append(pid)
    return strays


# --------------------------------------------------------------------------- CLI runner

# PM2 colours its errors even without a terminal; messages carry the words only.
ANSI_ESCAPE = re.compile(r'\x1b\[[0-9;]*m')


class Pm2Runner:
    """Runs the pm2 CLI as the target user with a minimal, clean environment. Argument lists only."""

    def __init__(self, module: Any, executable: Optional[str] = None, pm2_home: Optional[str] = None,
                 user: Optional[str] = None) -> None:
        self.module = module
        self.calls = 0
        current = pwd.getpwuid(os.geteuid())
        if user is None or user == current.pw_name:
            account = current
        else:
            try:
                account = pwd.getpwnam(user)
            except KeyError:
                raise SpecError('user', 'no such OS user: %s' % user) from None
            if os.geteuid() != 0:
                raise SpecError('user', 'managing the PM2 of %s needs root (become: true)' % user)
        self.user = account.pw_name
        self.uid, self.gid = account.pw_uid, account.pw_gid
        self.home = account.pw_dir
        self.switch_user = account.pw_uid != os.geteuid()
        self.pm2_home = pm2_home or os.path.join(self.home, '.pm2')
        if executable:
            if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
                raise SpecError('executable', '%s is not an executable file' % executable)
            self.pm2 = executable
        else:
            # A host running only systemd apps may have no PM2; run() says so when PM2 is really needed.
            self.pm2 = module.get_bin_path('pm2', opt_dirs=['/usr/local/bin', '/usr/bin'])
        self.prefix = [module.get_bin_path('env', required=True), '-i'] + ['%s=%s' % kv for kv in self.environment()]
        if self.switch_user:
            self.prefix = [module.get_bin_path('runuser', required=True), '-u', self.user, '--'] + self.prefix

    @property
    def daemon(self) -> str:
        """Which daemon this is, for messages."""
        return 'the PM2 daemon of user %s (PM2_HOME %s)' % (self.user, self.pm2_home)

    @property
    def log_path(self) -> str:
        """PM2's own log: why it restarted or stopped an app."""
        return os.path.join(self.pm2_home, 'pm2.log')

    def environment(self) -> List[tuple]:
        # node usually sits next to pm2 (nvm, npm prefix); no caller variables leak into PM2's records.
        path = [os.path.dirname(self.pm2)] if self.pm2 else []
        path += ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']
        return [('PATH', ':'.join(path)), ('HOME', self.home), ('PM2_HOME', self.pm2_home),
                ('PM2_DISCRETE_MODE', 'true'), ('LANG', 'C')]

    def run(self, *args: str) -> str:
        if not self.pm2:
            raise SpecError('executable', 'pm2 not found in PATH, /usr/local/bin or /usr/bin; set executable')
        if args[:1] == ('reload',):
            self.clear_stale_reload_lock()
        self.calls += 1
        cwd = self.home if os.path.isdir(self.home) else '/'
        rc, out, err = self.module.run_command(self.prefix + [self.pm2] + list(args), cwd=cwd)
        if rc != 0:
            reason = ANSI_ESCAPE.sub('', err or out).strip()[-2000:]
            raise Pm2Error('pm2 %s failed (rc=%s): %s' % (' '.join(args[:2]), rc, reason),
                           rc=rc, stdout=out[-2000:], stderr=err[-2000:])
        return out

    def clear_stale_reload_lock(self) -> bool:
        """PM2 refuses every reload for 30 s after one that did not finish: reload.lock keeps its start time (ms)
        until PM2 blanks it at the end. A lock older than the running daemon was left by a reload that died with the
        previous daemon (power cut, kill -9); blank it as PM2 would have. True when it did."""
        lock = os.path.join(self.pm2_home, 'reload.lock')
        try:
            with open(lock) as handle:
                taken_ms = int(handle.read().strip() or 0)
            daemon_started = os.stat(os.path.join(self.pm2_home, 'pm2.pid')).st_mtime
        except (OSError, ValueError):
            return False
        if not taken_ms or taken_ms / 1000.0 >= daemon_started or not self.daemon_running():
            return False
        with open(lock, 'w'):
            pass
        return True

    def daemon_pid(self) -> int:
        """The PM2 daemon's pid from its pid file; 0 when there is none."""
        try:
            with open(os.path.join(self.pm2_home, 'pm2.pid')) as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return 0

    def daemon_running(self) -> bool:
        try:
            with open(os.path.join(self.pm2_home, 'pm2.pid')) as handle:
                pid = int(handle.read().strip())
            os.kill(pid, 0)
        except (OSError, ValueError) as exc:
            return getattr(exc, 'errno', None) == errno.EPERM  # alive, owned by another user
        return True

    def jlist(self, spawn: bool = True) -> Dict[str, App]:
        """Every pm2 command starts a daemon where none runs; callers that must not change anything pass spawn=False."""
        if not spawn and not self.daemon_running():
            return {}
        return parse_jlist(self.run('jlist'))
