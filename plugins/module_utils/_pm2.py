# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""PM2 CLI runner, ``pm2 jlist`` parser, app spec normaliser and the pure planner."""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import pwd
import re

MARKER_SPEC = 'NODEFLEET_SPEC'
MARKER_RELEASE = 'NODEFLEET_RELEASE'
MARKER_ENV_DIGEST = 'NODEFLEET_ENV_DIGEST'
MARKER_ENV_FILE = 'NODEFLEET_ENV_FILE'
MARKERS = (MARKER_SPEC, MARKER_RELEASE, MARKER_ENV_DIGEST, MARKER_ENV_FILE)

STATES = ('present', 'started', 'stopped', 'restarted', 'reloaded', 'absent')
RUNNING_STATUSES = ('online', 'launching')
NAME_RE = re.compile(r'^[a-z0-9][a-z0-9.-]*$')
ENV_KEY_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
NODE_INTERPRETERS = ('node', 'nodejs')

# Options handed to PM2 in the ecosystem file and recorded (hashed) in NODEFLEET_SPEC.
PM2_FIELDS = (
    'script', 'cwd', 'args', 'interpreter', 'node_args', 'exec_mode', 'autorestart', 'watch', 'ignore_watch',
    'watch_delay', 'max_memory_restart', 'min_uptime', 'max_restarts', 'restart_delay', 'exp_backoff_restart_delay',
    'cron_restart', 'kill_timeout', 'wait_ready', 'listen_timeout', 'out_file', 'error_file', 'log_file',
    'log_date_format', 'merge_logs', 'time', 'namespace',
)
# Module-side options that never reach PM2.
# A crash 2 s after start still shows 'online' between restarts (pm2-behaviour.md §10): watch longer than that.
DEFAULT_SETTLE_MS = 3000
CONTROL_FIELDS = ('name', 'state', 'supervisor', 'instances', 'env', 'env_file', 'release_path', 'settle_time', 'ready_timeout')
SUPERVISORS = ('pm2', 'systemd')
APP_FIELDS = PM2_FIELDS + CONTROL_FIELDS

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


class Pm2Error(Exception):
    """PM2 failed or the live state cannot be acted on safely."""

    def __init__(self, msg, **details):
        super(Pm2Error, self).__init__(msg)
        self.details = details


class SpecError(Pm2Error):
    """Invalid input; names the offending option."""

    def __init__(self, field, msg):
        super(SpecError, self).__init__('%s: %s' % (field, msg), field=field)
        self.field = field


# --------------------------------------------------------------------------- jlist parser

def extract_json_array(text):
    """Return the JSON array in pm2 output, skipping any banner or daemon start lines before it."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r'^\s*\[', text, re.MULTILINE):
        start = text.index('[', match.start())
        try:
            value, dummy = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, list):
            return value
    raise Pm2Error('could not find the JSON process list in pm2 jlist output', stdout=text[-2000:])


def _marker(pm2_env, key):
    env = pm2_env.get('env') or {}
    value = env.get(key, pm2_env.get(key))
    return value if isinstance(value, str) else None


def _mode(exec_mode):
    return 'cluster' if exec_mode == 'cluster_mode' else 'fork'


def parse_jlist(text):
    """Parse ``pm2 jlist`` output into {name: app}, dropping PM2 modules and every env value but our markers."""
    apps = {}
    for proc in extract_json_array(text):
        pm2_env = proc.get('pm2_env') or {}
        if pm2_env.get('pmx_module'):
            continue
        name = proc.get('name', pm2_env.get('name'))
        monit = proc.get('monit') or {}
        instance = {
            'pm_id': proc.get('pm_id', pm2_env.get('pm_id')),
            'pid': proc.get('pid') or 0,
            'status': pm2_env.get('status'),
            'restart_time': pm2_env.get('restart_time') or 0,
            'pm_uptime': pm2_env.get('pm_uptime') or 0,
            'memory': monit.get('memory') or 0,
            'cpu': monit.get('cpu') or 0,
            'err_log': pm2_env.get('pm_err_log_path'),
        }
        identity = (pm2_env.get('pm_exec_path'), _mode(pm2_env.get('exec_mode')))
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
                'markers': dict((k, _marker(pm2_env, k)) for k in MARKERS),
                'conflict': False,
                'instances': [],
            }
        elif (app['script'], app['exec_mode']) != identity:
            app['conflict'] = True
        app['instances'].append(instance)
    for app in apps.values():
        app['instances'].sort(key=lambda i: i['pm_id'] if isinstance(i['pm_id'], int) else -1)
    return apps


# --------------------------------------------------------------------------- spec normaliser

_MEMORY_RE = re.compile(r'^(\d+(?:\.\d+)?)\s*([KMG]?)B?$', re.IGNORECASE)
_DURATION_RE = re.compile(r'^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$', re.IGNORECASE)
_DURATION_MS = {'': 1, 'ms': 1, 's': 1000, 'm': 60000, 'h': 3600000}


def parse_memory(value):
    """'500M' / '1G' / '300K' / bytes -> bytes (PM2 counts 1K as 1024)."""
    if isinstance(value, bool):
        raise SpecError('max_memory_restart', 'expected bytes or a size like 500M, got %r' % (value,))
    if isinstance(value, int):
        if value <= 0:
            raise SpecError('max_memory_restart', 'must be positive')
        return value
    match = _MEMORY_RE.match(str(value).strip())
    if not match:
        raise SpecError('max_memory_restart', 'expected bytes or a size like 500M, 1G, 300K, got %r' % (value,))
    number = int(float(match.group(1)) * 1024 ** ' KMG'.index(match.group(2).upper() or ' '))
    if number <= 0:
        raise SpecError('max_memory_restart', 'must be positive')
    return number


def parse_duration_ms(field, value):
    """int ms or '10s' / '500ms' / '1m' -> int ms."""
    if isinstance(value, bool):
        raise SpecError(field, 'expected milliseconds or a duration like 10s, got %r' % (value,))
    if isinstance(value, int):
        if value < 0:
            raise SpecError(field, 'must not be negative')
        return value
    match = _DURATION_RE.match(str(value).strip())
    if not match:
        raise SpecError(field, 'expected milliseconds or a duration like 10s, 500ms, 1m, got %r' % (value,))
    return int(float(match.group(1)) * _DURATION_MS[(match.group(2) or '').lower()])


def resolve_instances(value, cpu_count):
    """int >= 1, 'max' (all CPUs) or a negative int (all CPUs but N, at least 1) -> process count."""
    if value is None:
        return 1
    if isinstance(value, bool):
        raise SpecError('instances', 'expected a positive number, max, or a negative number, got %r' % (value,))
    text = str(value).strip().lower()
    if text == 'max':
        return max(1, cpu_count)
    if not re.match(r'^-?\d+$', text):
        raise SpecError('instances', 'expected a positive number, max, or a negative number, got %r' % (value,))
    number = int(text)
    if number == 0:
        raise SpecError('instances', 'must not be 0 (use a positive count, max, or -N for all CPUs but N)')
    if number < 0:
        return max(1, cpu_count + number)
    return number


def validate_name(name):
    if not isinstance(name, str) or not name:
        raise SpecError('name', 'is required')
    if len(name) > 100:
        raise SpecError('name', 'must be at most 100 characters')
    if not NAME_RE.match(name) or name.isdigit() or name == 'all':
        raise SpecError('name', '%r must match ^[a-z0-9][a-z0-9.-]*$, must not be purely numeric and not "all"' % name)
    return name


def _is_node(interpreter):
    return interpreter is None or os.path.basename(interpreter) in NODE_INTERPRETERS


def _abs_path(field, path, cwd):
    if path is None or os.path.isabs(path):
        return path
    if cwd is None:
        raise SpecError(field, '%r is relative; give an absolute path or set cwd' % path)
    return os.path.normpath(os.path.join(cwd, path))


def _str_list(field, value):
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(field, 'expected a list of strings')
    return list(value)


def _env_value(key, value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (str, int, float)):
        return str(value)
    raise SpecError('env', 'value of %s must be a string or number' % key)


def _digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode('utf-8')).hexdigest()[:10]


def normalise_app(params, cpu_count):
    """Validate one app's options and return the normalised desired spec (no env-file content)."""
    name = validate_name(params.get('name'))
    state = params.get('state') or 'started'
    if state not in STATES:
        raise SpecError('state', 'must be one of %s' % ', '.join(STATES))
    supervisor = params.get('supervisor') or 'pm2'
    if supervisor not in SUPERVISORS:
        raise SpecError('supervisor', 'must be one of %s' % ', '.join(SUPERVISORS))
    spec = {'name': name, 'state': state, 'supervisor': supervisor}
    script = params.get('script')
    if script is None:
        # Name-only form: act on an existing app by name, without managing its configuration.
        for field in APP_FIELDS:
            if field not in ('name', 'state', 'supervisor', 'settle_time', 'ready_timeout', 'exec_mode') and params.get(field) is not None:
                raise SpecError(field, 'needs script; without script the app is only acted on by name')
        spec.update(managed=False, settle_time=params.get('settle_time') or DEFAULT_SETTLE_MS, ready_timeout=params.get('ready_timeout') or 60)
        return spec

    cwd = params.get('cwd')
    if cwd is not None and not os.path.isabs(cwd):
        raise SpecError('cwd', 'must be an absolute path')
    if '/' in script or (cwd and os.path.exists(os.path.join(cwd, script))):
        script = _abs_path('script', script, cwd)
    checks_files = state != 'absent'
    if checks_files and cwd is not None and not os.path.isdir(cwd):
        raise SpecError('cwd', '%s is not a directory' % cwd)
    if checks_files and os.path.isabs(script) and not os.path.exists(script):
        raise SpecError('script', '%s does not exist' % script)

    exec_mode = params.get('exec_mode') or 'fork'
    if exec_mode not in ('fork', 'cluster'):
        raise SpecError('exec_mode', 'must be fork or cluster')
    interpreter = params.get('interpreter')
    if exec_mode == 'cluster' and not _is_node(interpreter):
        raise SpecError('interpreter', 'cluster mode runs Node.js only, got interpreter %r' % interpreter)

    watch = params.get('watch')
    if watch is not None and not isinstance(watch, bool):
        watch = _str_list('watch', watch)
    for field in ('watch_delay', 'max_restarts', 'restart_delay', 'exp_backoff_restart_delay', 'kill_timeout', 'listen_timeout'):
        value = params.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise SpecError(field, 'must be a non-negative integer')

    pm2 = {
        'script': script,
        'cwd': cwd,
        'args': _str_list('args', params.get('args')),
        'interpreter': interpreter,
        'node_args': _str_list('node_args', params.get('node_args')),
        'exec_mode': exec_mode,
        'watch': watch,
        'ignore_watch': _str_list('ignore_watch', params.get('ignore_watch')),
        'max_memory_restart': None if params.get('max_memory_restart') is None else parse_memory(params['max_memory_restart']),
        'min_uptime': None if params.get('min_uptime') is None else parse_duration_ms('min_uptime', params['min_uptime']),
        'out_file': _abs_path('out_file', params.get('out_file'), cwd),
        'error_file': _abs_path('error_file', params.get('error_file'), cwd),
        'log_file': _abs_path('log_file', params.get('log_file'), cwd),
    }
    for field in PM2_FIELDS:
        if field not in pm2:
            pm2[field] = params.get(field)

    namespace = pm2['namespace']
    if namespace is not None and (not namespace or namespace == name):
        raise SpecError('namespace', 'must be non-empty and differ from the app name')

    env = {}
    for key, value in (params.get('env') or {}).items():
        if not ENV_KEY_RE.match(str(key)):
            raise SpecError('env', 'invalid variable name %r (must match ^[A-Za-z_][A-Za-z0-9_]*$)' % (key,))
        if key.startswith('NODEFLEET_'):
            raise SpecError('env', '%s: the NODEFLEET_ prefix is reserved' % key)
        env[key] = _env_value(key, value)

    env_file = params.get('env_file')
    if env_file is not None:
        env_file = _abs_path('env_file', env_file, cwd)
        if checks_files and not os.path.isfile(env_file):
            raise SpecError('env_file', '%s does not exist or is not a file' % env_file)
        if supervisor == 'pm2' and not _is_node(interpreter):
            raise SpecError('env_file', 'is loaded by a Node.js preload and needs a Node.js interpreter, got %r' % interpreter)

    release_path = params.get('release_path') or cwd or os.path.dirname(script) or None
    release = os.path.realpath(release_path) if release_path and os.path.isabs(release_path) else None

    fingerprint = dict((field, _digest(value)) for field, value in pm2.items() if value is not None)
    fingerprint.update(('env.%s' % key, _digest(value)) for key, value in env.items())
    if env_file is not None:
        fingerprint['env_file'] = _digest(env_file)

    settle = params.get('settle_time')
    spec.update(
        managed=True,
        pm2=pm2,
        env=env,
        env_file=env_file,
        instances=resolve_instances(params.get('instances'), cpu_count),
        release=release,
        fingerprint=fingerprint,
        settle_time=settle,
        ready_timeout=params.get('ready_timeout') or 60,
    )
    if settle is None:
        spec['settle_time'] = max(pm2['min_uptime'] or 0, DEFAULT_SETTLE_MS)
    return spec


def format_fingerprint(fingerprint):
    return ','.join('%s=%s' % item for item in sorted(fingerprint.items()))


def read_fingerprint(text):
    result = {}
    for item in (text or '').split(','):
        key, sep, value = item.partition('=')
        if sep:
            result[key] = value
    return result


def env_digest(key, content):
    """Keyed digest of env-file content, safe to store in PM2's (readable) records."""
    return hmac.new(key, content, hashlib.sha256).hexdigest()


def ecosystem_app(spec, env_digest_value=None, preload=None):
    """The app entry for the ecosystem file: PM2 options, user env and our secret-free markers."""
    app = dict((k, v) for k, v in spec['pm2'].items() if v is not None)
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


# --------------------------------------------------------------------------- planner

# Changes PM2 applies with an ecosystem reload; everything else needs delete + start.
RELOAD_REASONS = ('release', 'env_file_content')


def _classify(field, change):
    """'reload' or 'recreate' for a changed fingerprint field."""
    if field.startswith('env.'):
        return 'recreate' if change == 'removed' else 'reload'
    if field == 'env_file' and change == 'changed':
        return 'reload'
    return 'recreate'


def diff_app(spec, actual, env_digest_value=None):
    """Compare a managed spec with the live app -> (recreate_reasons, reload_reasons, scale)."""
    recreate, reload_ = [], []
    pm2 = spec['pm2']
    if os.path.isabs(pm2['script']) and actual['script'] != pm2['script']:
        recreate.append('script')
    if pm2['cwd'] is not None and actual['cwd'] != pm2['cwd']:
        recreate.append('cwd')
    if actual['exec_mode'] != pm2['exec_mode']:
        recreate.append('exec_mode')
    if actual['namespace'] != (pm2['namespace'] or 'default'):
        recreate.append('namespace')
    markers = actual['markers']
    if markers.get(MARKER_SPEC) is None:
        recreate.append('unmanaged')
    else:
        recorded = read_fingerprint(markers[MARKER_SPEC])
        wanted = spec['fingerprint']
        for field in sorted(set(recorded) | set(wanted)):
            if field in recorded and field in wanted:
                change = 'changed' if recorded[field] != wanted[field] else None
            else:
                change = 'removed' if field in recorded else 'added'
            if change and field not in recreate:
                (recreate if _classify(field, change) == 'recreate' else reload_).append(field)
    if spec['release'] and markers.get(MARKER_RELEASE) != spec['release']:
        reload_.append('release')
    if spec['env_file'] and (env_digest_value is None or markers.get(MARKER_ENV_DIGEST) != env_digest_value):
        reload_.append('env_file_content')
    scale = len(actual['instances']) != spec['instances']
    return recreate, reload_, scale


def plan_app(spec, actual, env_digest_value=None):
    """Pure planner: desired spec + parsed live app (or None) -> {'actions': [...], 'reasons': [...]}."""
    state = spec['state']
    name = spec['name']
    if actual is not None and actual['conflict']:
        raise Pm2Error('app %s: several processes share this name with different scripts or exec modes; '
                       'refusing to act on it - delete the stray processes first' % name, app=name)

    def plan(actions, reasons=()):
        return {'name': name, 'actions': list(actions), 'reasons': list(reasons)}

    if actual is None:
        if state in ('absent', 'stopped'):
            return plan([])
        if not spec['managed']:
            raise SpecError('script', 'app %s does not exist, so script is required to create it' % name)
        return plan(['start'], ['missing'])
    if state == 'absent':
        return plan(['delete'])

    statuses = [i['status'] for i in actual['instances']]
    running = all(s in RUNNING_STATUSES for s in statuses)
    idle = all(s == 'stopped' for s in statuses)

    if not spec['managed']:
        if state == 'stopped':
            return plan([] if idle else ['stop'], [] if idle else ['status'])
        if state in ('restarted', 'reloaded'):
            return plan([state[:-2]], ['requested'])
        if state == 'started' and not running:
            return plan(['start'], ['status'])
        return plan([])

    recreate, reload_, scale = diff_app(spec, actual, env_digest_value)
    reasons = recreate + reload_ + (['instances'] if scale else [])
    drift = bool(reasons)
    if state == 'stopped':
        # Never start what should be stopped (a cron app could run a job): drift waits for the next start.
        return plan([] if idle else ['stop'], [] if idle else ['status'])
    if state == 'present' and idle:
        # PM2 cannot redefine an app without starting it: apply the change, then stop it again.
        return plan(['recreate', 'stop'] if drift else [], reasons)
    if recreate:
        return plan(['recreate'], reasons)
    if not running:
        # A stopped or errored app with changes is recreated so it starts with the new spec.
        return plan(['recreate'], reasons) if drift else plan(['start'], ['status'])
    actions = []
    if state in ('restarted', 'reloaded'):
        actions.append(state[:-2])
        reasons = reasons or ['requested']
    elif reload_:
        actions.append('reload')
    if scale:
        actions.append('scale')
    return plan(actions, reasons)


# --------------------------------------------------------------------------- CLI runner

class Pm2Runner(object):
    """Runs the pm2 CLI as the target user with a minimal, clean environment. Argument lists only."""

    def __init__(self, module, executable=None, pm2_home=None, user=None):
        self.module = module
        self.calls = 0
        current = pwd.getpwuid(os.geteuid())
        if user is None or user == current.pw_name:
            account = current
        else:
            try:
                account = pwd.getpwnam(user)
            except KeyError:
                raise SpecError('user', 'no such OS user: %s' % user)
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

    def environment(self):
        # node usually sits next to pm2 (nvm, npm prefix); no caller variables leak into PM2's records.
        path = [os.path.dirname(self.pm2)] if self.pm2 else []
        path += ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']
        return [('PATH', ':'.join(path)), ('HOME', self.home), ('PM2_HOME', self.pm2_home),
                ('PM2_DISCRETE_MODE', 'true'), ('LANG', 'C')]

    def run(self, *args):
        if not self.pm2:
            raise SpecError('executable', 'pm2 not found in PATH, /usr/local/bin or /usr/bin; set executable')
        self.calls += 1
        cwd = self.home if os.path.isdir(self.home) else '/'
        rc, out, err = self.module.run_command(self.prefix + [self.pm2] + list(args), cwd=cwd)
        if rc != 0:
            raise Pm2Error('pm2 %s failed (rc=%s): %s' % (' '.join(args[:2]), rc, (err or out).strip()[-2000:]),
                           rc=rc, stdout=out[-2000:], stderr=err[-2000:])
        return out

    def daemon_running(self):
        try:
            with open(os.path.join(self.pm2_home, 'pm2.pid')) as handle:
                pid = int(handle.read().strip())
            os.kill(pid, 0)
        except (IOError, OSError, ValueError) as exc:
            return getattr(exc, 'errno', None) == errno.EPERM  # alive, owned by another user
        return True

    def jlist(self, spawn=True):
        """Every pm2 command starts a daemon where none runs; callers that must not change anything pass spawn=False."""
        if not spawn and not self.daemon_running():
            return {}
        return parse_jlist(self.run('jlist'))
