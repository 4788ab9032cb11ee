# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""PM2 ecosystem file import (controller side, used by the pm2_import action plugin).

Three pure stages plus one sandboxed evaluation:

- ``load_ecosystem()``: JSON and YAML are parsed in Python; JavaScript (CommonJS, ES module) is evaluated by a child
  ``node`` process (``EVALUATOR_JS``) that only prints JSON on stdout.
- ``plan_import()``: maps the apps to ``pm2_deploy_apps`` / ``pm2_env_apps``, one group per ``env_*`` block, moves
  secret-looking env values out (``looks_secret()``) and lists every key it cannot map.
- ``render_*()``: the text of the files; the caller encrypts the secrets file and writes.

No error message built here contains a value from the ecosystem file: values may be secrets.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import textwrap

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover - yaml ships with ansible-core on the controller
    yaml = None
    HAS_YAML = False

from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2 import ENV_KEY_RE, NODE_INTERPRETERS
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_app import APP_OPTIONS


class EcosystemError(Exception):
    """A problem with the ecosystem file. The message never contains a value from the file."""


# ---------------------------------------------------------------------------------------------------------------
# Evaluation

JS_EXTENSIONS = ('.js', '.cjs', '.mjs')
JSON_EXTENSIONS = ('.json',)
YAML_EXTENSIONS = ('.yml', '.yaml')
MAX_OUTPUT = 4 * 1024 * 1024

# Runs in a child node process: cwd and HOME in an empty temp dir, a minimal environment, the permission model on
# (no file writes, no child processes, no workers; reads limited to the ecosystem file's directory and the temp
# dir) where this Node.js has it, and network modules stubbed before the file is loaded (CommonJS and ES module
# imports see the same stubbed builtins). It prints one JSON document: {"config": ...} or {"error": {...}}.
# The error carries the error's class and first message line only: Node's own uncaught-error output would quote
# the offending source line, which may hold a secret.
EVALUATOR_JS = r"""'use strict';
const Module = require('module');
const path = require('path');
const url = require('url');
const blocked = (what) => function () { throw new Error('nodefleet pm2_import: ' + what + ' is disabled while evaluating an ecosystem file'); };
const stub = (name, fns) => {
  let mod;
  try { mod = require(name); } catch (e) { return; }
  for (const fn of fns) { if (typeof mod[fn] === 'function') { try { mod[fn] = blocked(name + '.' + fn); } catch (e) { /* read-only */ } } }
};
stub('net', ['connect', 'createConnection', 'createServer']);
try { require('net').Socket.prototype.connect = blocked('net.Socket.connect'); } catch (e) { /* ignore */ }
stub('tls', ['connect', 'createServer', 'createSecureContext']);
stub('http', ['request', 'get', 'createServer', 'Agent']);
stub('https', ['request', 'get', 'createServer', 'Agent']);
stub('http2', ['connect', 'createServer', 'createSecureServer']);
stub('dgram', ['createSocket']);
stub('dns', ['lookup', 'resolve', 'resolve4', 'resolve6', 'resolveAny', 'resolveTxt', 'resolveSrv', 'reverse']);
try {
  const p = require('dns').promises;
  for (const k of Object.keys(p)) { if (typeof p[k] === 'function') p[k] = blocked('dns.promises.' + k); }
} catch (e) { /* ignore */ }
stub('child_process', ['spawn', 'spawnSync', 'exec', 'execSync', 'execFile', 'execFileSync', 'fork']);
stub('worker_threads', ['Worker']);
stub('cluster', ['fork']);
if (typeof globalThis.fetch === 'function') globalThis.fetch = blocked('fetch');
if (typeof globalThis.WebSocket === 'function') globalThis.WebSocket = blocked('WebSocket');
try { Module.syncBuiltinESMExports(); } catch (e) { /* old node */ }

const fs = require('fs');
const out = (doc) => { fs.writeSync(1, JSON.stringify(doc)); process.exit(0); };
const fail = (kind, e) => out({ error: { kind, name: (e && e.name) || 'Error', message: String((e && e.message) || e).split('\n')[0].slice(0, 300) } });

function plain(value, seen, depth) {
  if (depth > 50) throw new Error('nesting too deep');
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return Number.isFinite(value) ? value : String(value);
  if (typeof value === 'bigint') return String(value);
  if (typeof value === 'undefined') return undefined;
  if (typeof value === 'function') return { __nodefleet_unsupported__: 'function' };
  if (typeof value === 'symbol') return { __nodefleet_unsupported__: 'symbol' };
  if (value instanceof RegExp) return { __nodefleet_unsupported__: 'regexp' };
  if (value instanceof Date) return value.toISOString();
  if (seen.has(value)) throw new Error('circular structure');
  seen.add(value);
  let res;
  if (Array.isArray(value)) {
    res = value.map((v) => { const p = plain(v, seen, depth + 1); return p === undefined ? null : p; });
  } else {
    res = {};
    for (const k of Object.keys(value)) { const p = plain(value[k], seen, depth + 1); if (p !== undefined) res[k] = p; }
  }
  seen.delete(value);
  return res;
}

async function main() {
  const file = process.argv[2];
  const esmCopy = process.argv[3];
  let exported;
  const isEsmSyntax = (e) => e && e.name === 'SyntaxError' && /\b(export|import)\b/.test(String(e.message));
  try {
    if (file.endsWith('.mjs')) {
      exported = await import(url.pathToFileURL(file).href);
    } else {
      try {
        exported = require(file);
      } catch (e) {
        if (!isEsmSyntax(e) && !(e && e.code === 'ERR_REQUIRE_ESM')) throw e;
        // An ES module in a .js file without "type": "module": import a .mjs copy (written by the caller).
        exported = await import(url.pathToFileURL(esmCopy).href);
      }
    }
  } catch (e) {
    return fail('load', e);
  }
  if (exported && typeof exported === 'object' && 'default' in exported && Object.prototype.toString.call(exported) === '[object Module]') {
    exported = exported.default;
  }
  if (exported && typeof exported.then === 'function') {
    try { exported = await exported; } catch (e) { return fail('load', e); }
  }
  try {
    out({ config: plain(exported, new Set(), 0) });
  } catch (e) {
    fail('serialise', e);
  }
}
main().catch((e) => fail('load', e));
"""


def _node_major(node):
    try:
        proc = subprocess.run([node, '--version'], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        raise EcosystemError('cannot run node (%s); install Node.js on the controller or set node_executable' % node)
    match = re.match(r'^v(\d+)\.', proc.stdout.strip())
    if not match:
        raise EcosystemError('cannot tell the version of %s' % node)
    return int(match.group(1))


def evaluate_js(path, node='node', timeout=10, environ=None):
    """Evaluate a JavaScript ecosystem file in a sandboxed child node process; return the exported object."""
    node_path = shutil.which(node) if os.sep not in node else node
    if not node_path:
        raise EcosystemError('node (%s) not found on the controller; install Node.js or set node_executable' % node)
    major = _node_major(node_path)
    src = os.path.realpath(path)
    src_dir = os.path.dirname(src)
    workdir = tempfile.mkdtemp(prefix='nodefleet-pm2-import-')
    try:
        evaluator = os.path.join(workdir, 'evaluate.cjs')
        with open(evaluator, 'w') as handle:
            handle.write(EVALUATOR_JS)
        esm_copy = os.path.join(workdir, 'ecosystem.mjs')
        shutil.copyfile(src, esm_copy)
        argv = [node_path]
        if major >= 20:
            argv.append('--permission' if major >= 23 else '--experimental-permission')
            for allowed in (src_dir, workdir):
                argv.append('--allow-fs-read=%s' % (allowed + ('/*' if major < 22 else '')))
            argv.append('--allow-fs-read=%s' % src)
        argv += ['--no-warnings', '--disallow-code-generation-from-strings', evaluator, src, esm_copy]
        env = {'PATH': '/usr/bin:/bin', 'HOME': workdir, 'LANG': 'C.UTF-8', 'NODE_OPTIONS': ''}
        env.update(environ or {})
        try:
            proc = subprocess.run(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise EcosystemError('evaluating %s with node took longer than %s s (timeout)' % (path, timeout))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if len(proc.stdout) > MAX_OUTPUT:
        raise EcosystemError('the evaluated ecosystem file %s is larger than %d bytes' % (path, MAX_OUTPUT))
    try:
        doc = json.loads(proc.stdout.decode('utf-8'))
    except ValueError:
        # stderr is not shown: it may quote source lines.
        raise EcosystemError('node could not evaluate %s (exit code %s, no result)' % (path, proc.returncode))
    if 'error' in doc:
        err = doc['error']
        raise EcosystemError('node could not %s %s: %s: %s' % (
            'load' if err.get('kind') == 'load' else 'serialise', path, err.get('name'), redact_text(err.get('message', ''))))
    return doc.get('config')


def load_ecosystem(path, node='node', timeout=10, environ=None):
    """Return the object an ecosystem file defines (JSON, YAML, CommonJS or ES module)."""
    if not os.path.isfile(path):
        raise EcosystemError('%s is not a file' % path)
    ext = os.path.splitext(path)[1].lower()
    if ext in JS_EXTENSIONS:
        return evaluate_js(path, node=node, timeout=timeout, environ=environ)
    with open(path, 'rb') as handle:
        data = handle.read()
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        raise EcosystemError('%s is not UTF-8 text' % path)
    if ext in JSON_EXTENSIONS:
        try:
            return json.loads(text)
        except ValueError as exc:
            # json's message is "Expecting ... : line L column C (char N)", no content.
            raise EcosystemError('%s is not valid JSON: %s' % (path, getattr(exc, 'msg', 'syntax error')))
    if ext in YAML_EXTENSIONS:
        if not HAS_YAML:
            raise EcosystemError('PyYAML is needed to read %s' % path)
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            # str(exc) quotes the offending line; keep only the problem and its position.
            mark = getattr(exc, 'problem_mark', None)
            where = ' at line %d column %d' % (mark.line + 1, mark.column + 1) if mark else ''
            raise EcosystemError('%s is not valid YAML: %s%s' % (path, getattr(exc, 'problem', None) or 'syntax error', where))
    raise EcosystemError('%s: unknown ecosystem file type %r (expected .js, .cjs, .mjs, .json, .yml or .yaml)' % (path, ext))


# ---------------------------------------------------------------------------------------------------------------
# Secret detection

SECRET_WORDS = ('SECRET', 'TOKEN', 'PASSWORD', 'PASSWD', 'PRIVATE', 'CREDENTIAL', 'APIKEY', 'API_KEY', 'ACCESS_KEY',
                'PASSPHRASE', 'SIGNATURE', 'COOKIE', 'SESSION_KEY', 'CLIENT_SECRET', 'AUTH')
SECRET_TOKENS = ('KEY', 'PASS', 'PWD', 'SALT', 'DSN', 'CERT', 'JWT', 'HMAC', 'SIGNING')
URL_WITH_PASSWORD_RE = re.compile(r'^[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@', re.IGNORECASE)
PEM_RE = re.compile(r'-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----')
ENTROPY_MIN_LENGTH = 20
ENTROPY_THRESHOLD = 3.5
HEX_ENTROPY_MIN_LENGTH = 32


def shannon_entropy(text):
    if not text:
        return 0.0
    counts = {}
    for char in text:
        counts[char] = counts.get(char, 0) + 1
    length = float(len(text))
    return -sum((n / length) * math.log(n / length, 2) for n in counts.values())


def _high_entropy(value):
    if len(value) < ENTROPY_MIN_LENGTH or any(c.isspace() for c in value):
        return False
    if value.startswith(('/', './', '../', '~/')) or '://' in value:
        return False
    if not (re.search(r'[0-9]', value) and re.search(r'[A-Za-z]', value)):
        return False
    if re.match(r'^[0-9a-fA-F-]+$', value):
        # hex digests and UUIDs: 16 symbols, entropy at most 4
        return len(value.replace('-', '')) >= HEX_ENTROPY_MIN_LENGTH and shannon_entropy(value) >= 3.0
    return shannon_entropy(value) >= ENTROPY_THRESHOLD


def looks_secret(name, value, secret_names=(), plain_names=()):
    """Why an env entry looks like a secret ('name', 'entropy', 'url-password', 'pem', 'listed'), or None."""
    upper = str(name).upper()
    if upper in {n.upper() for n in plain_names}:
        return None
    if upper in {n.upper() for n in secret_names}:
        return 'listed'
    tokens = [t for t in re.split(r'[^A-Z0-9]+', upper) if t]
    if any(word in upper for word in SECRET_WORDS) or any(t in SECRET_TOKENS for t in tokens):
        return 'name'
    if isinstance(value, str):
        if PEM_RE.search(value):
            return 'pem'
        if URL_WITH_PASSWORD_RE.match(value):
            return 'url-password'
        if _high_entropy(value):
            return 'entropy'
    return None


def redact_text(text):
    """Replace every secret-looking word of a message with <redacted> (last line of defence for error texts)."""
    return re.sub(r'\S{%d,}' % ENTROPY_MIN_LENGTH,
                  lambda m: '<redacted>' if (_high_entropy(m.group(0)) or URL_WITH_PASSWORD_RE.match(m.group(0))) else m.group(0),
                  str(text))


# ---------------------------------------------------------------------------------------------------------------
# Mapping

# pm2_app app options an ecosystem app may set (the others are this collection's own controls).
NOT_FROM_ECOSYSTEM = ('name', 'state', 'env', 'env_file', 'release_path', 'settle_time', 'ready_timeout')
SUPPORTED = tuple(k for k in APP_OPTIONS if k not in NOT_FROM_ECOSYSTEM)
# Top level of a pm2_deploy_apps item; every other supported option goes under its `pm2:` dict.
DEPLOY_TOP = ('name', 'script', 'exec_mode', 'instances')

# PM2's own aliases (lib/API/schema.json), mapped to the canonical option.
ALIASES = {
    'exec_interpreter': 'interpreter',
    'interpreter_args': 'node_args',
    'node_args': 'node_args',
    'cron': 'cron_restart',
    'combine_logs': 'merge_logs',
    'output': 'out_file',
    'out': 'out_file',
    'out_log': 'out_file',
    'error': 'error_file',
    'err': 'error_file',
    'err_file': 'error_file',
    'err_log': 'error_file',
    'log': 'log_file',
    'mode': 'exec_mode',
    'cwd': 'cwd',
}

# PM2 options the collection does not manage (reported, with this hint).
PM2_UNSUPPORTED = (
    'instance_var', 'treekill', 'filter_env', 'source_map_support', 'vizion', 'increment_var', 'shutdown_with_message',
    'stop_exit_codes', 'port', 'pid_file', 'pid', 'disable_logs', 'append_env_to_name', 'force', 'autostart', 'max',
    'uid', 'gid', 'user', 'username', 'post_update', 'disable_trace', 'trace', 'pmx', 'automation', 'deep_monitoring',
    'wait_ready_timeout', 'windowsHide', 'kill_retry_time', 'max_memory_restart_check', 'cron_restart_delay',
    'exec_mode_args', 'listen_address', 'container', 'dist', 'docker', 'io', 'version', 'namespace_pattern',
)
HINTS = {
    'env_file': 'not a PM2 option (PM2 ignores it): put the variables of that file into pm2_env_apps[].vars or, for secrets, '
                'pm2_env_apps[].secrets (nodefleet.pm2.pm2_env renders the env file from inventory and ansible-vault)',
    'log_file_max_size': 'not a PM2 option (PM2 ignores it): rotate logs with the nodefleet.pm2.pm2_logrotate role',
    'log_file_max_files': 'not a PM2 option (PM2 ignores it): rotate logs with the nodefleet.pm2.pm2_logrotate role',
    'deploy': 'PM2 deploy section: use the nodefleet.pm2.pm2_deploy role (nodefleet.pm2.deploy playbook) instead',
    'user': 'the OS user comes from pm2_deploy_user (nodefleet.pm2.pm2_runtime creates it)',
    'uid': 'the OS user comes from pm2_deploy_user (nodefleet.pm2.pm2_runtime creates it)',
}

INT_FIELDS = tuple(k for k, v in APP_OPTIONS.items() if v.get('type') == 'int')
BOOL_FIELDS = tuple(k for k, v in APP_OPTIONS.items() if v.get('type') == 'bool')
LIST_FIELDS = tuple(k for k, v in APP_OPTIONS.items() if v.get('type') == 'list')
STR_FIELDS = tuple(k for k, v in APP_OPTIONS.items() if v.get('type') in ('str', 'path'))
COMMAND_RE = re.compile(r'^[A-Za-z0-9_-]+$')
UNSUPPORTED_MARK = '__nodefleet_unsupported__'


def normalise_app_name(name):
    """A pm2_app-safe name (^[a-z0-9][a-z0-9.-]*$, not numeric, not 'all')."""
    new = re.sub(r'[^a-z0-9.-]+', '-', str(name).lower()).strip('-.')
    new = re.sub(r'-{2,}', '-', new)[:100]
    if not new or new.isdigit() or new == 'all':
        new = 'app-' + (new or 'unnamed')
    return new


def group_name(block):
    """Inventory group of an env_<block> (env_production -> production)."""
    new = re.sub(r'[^a-z0-9_]+', '_', block.lower()).strip('_')
    if not new or new[0].isdigit():
        new = 'env_' + new
    return new


def vault_var(app, key):
    return 'vault_%s_%s' % (re.sub(r'[^a-z0-9]+', '_', app.lower()).strip('_'), re.sub(r'[^a-z0-9]+', '_', key.lower()).strip('_'))


def _bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ('true', 'false', 'yes', 'no'):
        return value.lower() in ('true', 'yes')
    if value in (0, 1):
        return bool(value)
    raise ValueError


def _convert(field, value):
    """Convert one supported field; raise ValueError (no value in the message) when it cannot be."""
    if isinstance(value, dict) and UNSUPPORTED_MARK in value:
        raise ValueError('a %s, not data' % value[UNSUPPORTED_MARK])
    if field in INT_FIELDS:
        if isinstance(value, bool):
            raise ValueError('expected an integer')
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.match(r'^-?\d+$', value.strip()):
            return int(value)
        raise ValueError('expected an integer (milliseconds)')
    if field in BOOL_FIELDS:
        try:
            return _bool(value)
        except ValueError:
            raise ValueError('expected a boolean')
    if field in LIST_FIELDS:
        if isinstance(value, str):
            return shlex.split(value)
        if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            return [str(v) for v in value]
        raise ValueError('expected a list of strings or a string')
    if field == 'exec_mode':
        mode = str(value).replace('_mode', '')
        if mode not in ('fork', 'cluster'):
            raise ValueError('expected fork or cluster')
        return mode
    if field == 'instances':
        if isinstance(value, bool):
            raise ValueError('expected a number or max')
        if isinstance(value, (int, float)):
            return int(value)
        if isinstance(value, str) and (value == 'max' or re.match(r'^-?\d+$', value)):
            return value if value == 'max' else int(value)
        raise ValueError('expected a number or max')
    if field == 'watch':
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ValueError('expected a boolean or a list of paths')
    if field in ('max_memory_restart', 'min_uptime'):
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            return value
        raise ValueError('expected a number or a string')
    if field in STR_FIELDS:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError('expected a string')
    return value


def _apps_of(config):
    if isinstance(config, list):
        return config, {}
    if isinstance(config, dict):
        apps = config.get('apps')
        if apps is None and ('script' in config or 'name' in config):
            return [config], {}
        if isinstance(apps, dict):
            apps = [apps]
        if not isinstance(apps, list):
            raise EcosystemError('the ecosystem file defines no "apps" list')
        return apps, {k: v for k, v in config.items() if k != 'apps'}
    raise EcosystemError('the ecosystem file must export an object with an "apps" list (got %s)' % type(config).__name__)


def _display(value):
    if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 80 and looks_secret('', value) is None):
        return json.dumps(value)
    return None


def plan_import(config, health=None, secret_names=(), plain_names=(), source=''):
    """Map an evaluated ecosystem object to inventory data. Pure; raises EcosystemError.

    Returns a dict:
      deploy_apps: list of pm2_deploy_apps items
      groups: {group: {app: {'vars': {...}, 'secrets': {KEY: var}}}} ('all' is the base env)
      vault: {group: {var: value}} secret values (only the caller may see them)
      unmapped: [{app, key, reason, value?}], secrets: [{app, key, var, reason, blocks}], renamed: [{from, to}],
      notes: [str]
    """
    apps, top = _apps_of(config)
    plan = dict(deploy_apps=[], groups={'all': {}}, vault={'all': {}}, unmapped=[], secrets=[], renamed=[], notes=[], source=source)
    for key in sorted(top):
        plan['unmapped'].append(dict(app=None, key=key, reason=HINTS.get(key, 'unknown top-level key of the ecosystem file')))
    seen = {}
    envs_per_app = []
    for index, raw in enumerate(apps):
        if not isinstance(raw, dict):
            raise EcosystemError('apps[%d] is not an object' % index)
        orig_name = raw.get('name')
        if orig_name is None or orig_name == '':
            script = raw.get('script')
            if not isinstance(script, str) or not script:
                raise EcosystemError('apps[%d] has neither name nor script' % index)
            orig_name = os.path.splitext(os.path.basename(script))[0]
            plan['notes'].append('apps[%d] has no name; PM2 would call it %s after its script' % (index, orig_name))
        if not isinstance(orig_name, (str, int)):
            raise EcosystemError('apps[%d].name is not a string' % index)
        orig_name = str(orig_name)
        name = normalise_app_name(orig_name)
        if name != orig_name:
            plan['renamed'].append({'from': orig_name, 'to': name})
        if name in seen:
            raise EcosystemError('apps[%d] and apps[%d] both map to the app name %s; rename one' % (seen[name], index, name))
        seen[name] = index
        item, pm2, env_blocks = _map_app(index, name, raw, plan)
        envs_per_app.append((name, item, pm2, env_blocks))

    all_groups = set()
    for name, item, pm2, env_blocks in envs_per_app:
        all_groups.update(group_name(key[4:]) for key in env_blocks if key != 'env')
    if 'all' in all_groups:
        raise EcosystemError('an env_all block would clash with the base env (group all); rename it')
    for name, item, pm2, env_blocks in envs_per_app:
        _map_env(name, item, pm2, env_blocks, sorted(all_groups), plan, secret_names, plain_names)
        if health:
            item['health'] = dict(health)
        else:
            port = _port_of(env_blocks)
            if port is not None:
                item['health'] = {'port': port, 'path': '/health'}
                plan['notes'].append('%s: health check http://127.0.0.1:%s/health assumed; adjust pm2_deploy_apps[].health' % (name, port))
            else:
                item['health'] = {'command': 'true'}
                plan['notes'].append('%s: no PORT in its env, so no health check (command: true); set pm2_deploy_apps[].health' % name)
        if pm2:
            item['pm2'] = pm2
        plan['deploy_apps'].append(item)
    return plan


def _port_of(env_blocks):
    ports = {str(block['PORT']) for block in env_blocks.values() if isinstance(block, dict) and isinstance(block.get('PORT'), (int, str))
             and str(block.get('PORT')).isdigit()}
    if len(ports) == 1:
        return int(ports.pop())
    base = env_blocks.get('env')
    if isinstance(base, dict) and str(base.get('PORT', '')).isdigit():
        return int(base['PORT'])
    return None


def _map_app(index, name, raw, plan):
    item = {'name': name}
    pm2 = {}
    env_blocks = {}
    fields = {}
    for key in raw:
        value = raw[key]
        if key == 'name':
            continue
        if key == 'env' or key.startswith('env_') and key != 'env_file':
            if not isinstance(value, dict):
                plan['unmapped'].append(dict(app=name, key=key, reason='an env block must be an object'))
            else:
                env_blocks[key] = value
            continue
        canonical = ALIASES.get(key, key)
        if canonical not in SUPPORTED:
            entry = dict(app=name, key=key)
            if key in HINTS:
                entry['reason'] = HINTS[key]
            elif key in PM2_UNSUPPORTED:
                entry['reason'] = 'PM2 option not managed by nodefleet.pm2.pm2_app'
            else:
                entry['reason'] = 'not a PM2 option known to the importer'
            shown = None if looks_secret(key, value) else _display(value)
            if shown is not None:
                entry['value'] = shown
            plan['unmapped'].append(entry)
            continue
        if canonical in fields:
            plan['notes'].append('%s: %s given twice (as %s); the last one wins' % (name, canonical, key))
        try:
            fields[canonical] = _convert(canonical, value)
        except ValueError as exc:
            plan['unmapped'].append(dict(app=name, key=key, reason='cannot convert: %s' % exc))
            continue
        if canonical != key:
            plan['notes'].append('%s: %s imported as %s' % (name, key, canonical))
        if canonical in ('args', 'node_args') and isinstance(value, str):
            plan['notes'].append('%s: %s string split into a list (shell words)' % (name, key))
        if isinstance(fields[canonical], str) and canonical not in ('script', 'cwd') and looks_secret(canonical, fields[canonical]):
            plan['notes'].append('%s: %s looks like it holds a secret; it is kept as is, move it out of the ecosystem file' % (name, canonical))

    script = fields.pop('script', None)
    if not isinstance(script, str) or not script:
        raise EcosystemError('apps[%d] (%s) has no script' % (index, name))
    cwd = fields.pop('cwd', None)
    rel_cwd = ''
    if cwd:
        if os.path.isabs(cwd):
            plan['notes'].append('%s: absolute cwd %s replaced by the release directory (pm2_deploy_to/current)' % (name, cwd))
        else:
            rel_cwd = os.path.normpath(cwd)
            if rel_cwd == '.':
                rel_cwd = ''
            elif rel_cwd.startswith('..'):
                raise EcosystemError('%s: cwd %s leaves the project directory' % (name, cwd))
    if COMMAND_RE.match(script) and '.' not in script:
        # A command from PATH (npm, pnpm, yarn): the deploy role would make it relative to the release.
        item['script'] = script
        pm2['script'] = script
        plan['notes'].append('%s: script %s is a command from PATH, not a file of the release' % (name, script))
    elif os.path.isabs(script):
        item['script'] = script
        pm2['script'] = script
        plan['notes'].append('%s: absolute script %s kept; the release directory is not used for it' % (name, script))
    else:
        item['script'] = os.path.normpath(os.path.join(rel_cwd, script))
    if rel_cwd:
        pm2['cwd'] = '{{ pm2_deploy_to }}/current/' + rel_cwd
    for key in DEPLOY_TOP[2:]:
        if key in fields:
            item[key] = fields.pop(key)
    _pm2_defaults(name, script, item, fields, plan)
    for key in sorted(fields):
        pm2[key] = fields[key]
    return item, pm2, env_blocks


# Interpreters PM2 picks by script extension when the file names none (lib/API/interpreter.json). Scripts without
# an entry run with node unless they are binaries, which only the file's content tells.
PM2_INTERPRETERS = {'.sh': 'bash', '.py': 'python', '.rb': 'ruby', '.php': 'php', '.pl': 'perl', '.js': 'node',
                    '.coffee': 'coffee', '.ls': 'lsc', '.ts': 'bun', '.tsx': 'bun'}


def _pm2_interpreter(interpreter, script):
    """The interpreter PM2 runs the script with, or None when only the script's content tells (binary or node)."""
    if interpreter:
        return os.path.basename(interpreter)
    ext = os.path.splitext(script)[1]
    if ext in PM2_INTERPRETERS:
        return PM2_INTERPRETERS[ext]
    return 'node' if ext in ('.cjs', '.mjs') else None


def _pm2_defaults(name, script, item, fields, plan):
    """Write out PM2's defaults that depend on what the app leaves out (lib/Common.js of pm2 7.0.4).

    nodefleet.pm2.pm2_app always gives PM2 an exec mode and an instance count, so leaving them to PM2 is not possible:
    - no exec_mode: PM2 picks cluster mode for an app with `instances` whose interpreter is node or bun (any name
      ending in node or bun, ts-node included), fork mode otherwise;
    - no cluster exec_mode and no instances (or 0 or max): PM2 merges the logs of the app's processes (merge_logs:
      true, log files without the -<pm_id> suffix), whatever mode it picks then;
    - instances 0 is one process per CPU, which pm2_app calls max.
    """
    instances = item.get('instances')
    given_mode = item.get('exec_mode')
    if given_mode is None:
        runner = _pm2_interpreter(fields.get('interpreter'), script)
        if 'instances' in item and runner is not None and runner.endswith(('node', 'bun')):
            item['exec_mode'] = 'cluster'
            plan['notes'].append('%s: no exec_mode: cluster mode, as PM2 runs an app with instances and the %s interpreter'
                                 % (name, runner))
            if runner not in NODE_INTERPRETERS:
                plan['notes'].append('%s: cluster mode runs Node.js, not the %s interpreter (PM2 does not use it there); '
                                     'nodefleet.pm2.pm2_app refuses the combination: set exec_mode' % (name, runner))
        else:
            item['exec_mode'] = 'fork'
            if 'instances' in item and runner is None:
                plan['notes'].append('%s: no exec_mode: imported as fork; PM2 would pick cluster mode if %s is a Node.js '
                                     'file rather than a binary' % (name, script))
    if instances == 0:
        instances = 'max'
        plan['notes'].append('%s: instances 0 (one process per CPU) imported as max' % name)
    item.pop('instances', None)
    item['instances'] = 1 if instances is None else instances  # after exec_mode, as in DEPLOY_TOP
    if given_mode != 'cluster' and instances in (None, 'max') and 'merge_logs' not in fields:
        fields['merge_logs'] = True
        plan['notes'].append('%s: merge_logs: true written out (PM2 merges the logs of an app without an instance count '
                             'unless it is given cluster mode)' % name)


def _map_env(name, item, pm2, env_blocks, all_groups, plan, secret_names, plain_names):
    interpreter = pm2.get('interpreter')
    node_app = interpreter is None or os.path.basename(interpreter) in NODE_INTERPRETERS
    base = env_blocks.get('env', {})
    own = {}
    for key, block in env_blocks.items():
        if key != 'env':
            grp = group_name(key[4:])
            if grp in own:
                raise EcosystemError('%s: two env blocks map to the same group %s' % (name, grp))
            own[grp] = block
    # Every group lists every app (a group's pm2_env_apps replaces the one of group all): the app's env_<group>
    # block merged over its env, as `pm2 start --env <group>` does, or its plain env when it has no such block.
    blocks = {'all': base}
    for grp in all_groups:
        merged = dict(base)
        merged.update(own.get(grp, {}))
        blocks[grp] = merged

    # A key is secret everywhere when any block's value looks secret (one reference per key).
    secret_keys = {}
    for grp, env in blocks.items():
        for key, value in env.items():
            reason = looks_secret(key, value, secret_names, plain_names)
            if reason and key not in secret_keys:
                secret_keys[key] = reason

    for grp, env in blocks.items():
        entry = {'name': name, 'user': '{{ pm2_deploy_user }}', 'vars': {}, 'secrets': {}}
        for key in env:
            value = env[key]
            if not ENV_KEY_RE.match(key) or key.startswith('NODEFLEET_'):
                plan['unmapped'].append(dict(app=name, key='%s.%s' % ('env' if grp == 'all' else 'env_' + grp, key),
                                             reason='env name not allowed (^[A-Za-z_][A-Za-z0-9_]*$, prefix NODEFLEET_ reserved)'))
                continue
            if isinstance(value, dict) or isinstance(value, list) or value is None:
                plan['unmapped'].append(dict(app=name, key='%s.%s' % ('env' if grp == 'all' else 'env_' + grp, key),
                                             reason='env value is not a string, number or boolean'))
                continue
            if key in secret_keys:
                var = vault_var(name, key)
                entry['secrets'][key] = var
                if grp == 'all' or plan['vault']['all'].get(var) != value:
                    plan['vault'].setdefault(grp, {})[var] = value
            else:
                entry['vars'][key] = value
        plan['groups'].setdefault(grp, {})[name] = entry

    for key in sorted(secret_keys):
        in_blocks = sorted(g for g, env in blocks.items() if key in env and (g == 'all' or g in own))
        plan['secrets'].append(dict(app=name, key=key, var=vault_var(name, key), reason=secret_keys[key], groups=in_blocks))

    if node_app:
        item['env_file'] = True
    else:
        # pm2_app loads env files through a Node.js preload; other interpreters get plain env (visible in pm2 jlist).
        item['env'] = "{{ (pm2_env_apps | selectattr('name', 'equalto', '%s') | first).vars }}" % name
        plan['notes'].append('%s: interpreter %s cannot load an env file; its plain vars are passed as env (visible in pm2 jlist)%s'
                             % (name, interpreter, ' and its secrets are NOT passed' if secret_keys else ''))


# ---------------------------------------------------------------------------------------------------------------
# Rendering

class _Dumper(yaml.SafeDumper if HAS_YAML else object):
    """Block-style YAML with indented lists (yamllint's default)."""

    def increase_indent(self, flow=False, indentless=False):
        return super(_Dumper, self).increase_indent(flow, False)


if HAS_YAML:
    # SafeDumper only knows the exact built-in types. Module arguments reach the action plugin as subclasses of them
    # (ansible-core 2.19 tags every value with its origin: _AnsibleTaggedStr, _AnsibleTaggedDict, ...), so `user`,
    # `health` or `environment` values made every real import fail with a RepresenterError; dump them as their base type.
    for _base, _represent in ((str, yaml.SafeDumper.represent_str), (bool, yaml.SafeDumper.represent_bool),
                              (int, yaml.SafeDumper.represent_int), (float, yaml.SafeDumper.represent_float),
                              (dict, yaml.SafeDumper.represent_dict), (list, yaml.SafeDumper.represent_list),
                              (tuple, yaml.SafeDumper.represent_list)):
        _Dumper.add_multi_representer(_base, _represent)


def to_yaml(data):
    return yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=False, allow_unicode=True, width=160)


def _comment(lines):
    out = []
    for line in lines:
        indent = len(line) - len(line.lstrip())
        wrapped = textwrap.wrap(line, width=116, subsequent_indent=' ' * (indent + 4), break_on_hyphens=False) or ['']
        out.extend('# %s' % w if w else '#' for w in wrapped)
    return ''.join(line + '\n' for line in out)


def report_lines(plan):
    lines = []
    if plan['unmapped']:
        lines.append('Not imported (nodefleet.pm2 cannot map these keys):')
        for entry in plan['unmapped']:
            where = '%s.%s' % (entry['app'], entry['key']) if entry['app'] else entry['key']
            lines.append('  - %s%s: %s' % (where, ' = ' + entry['value'] if 'value' in entry else '', entry['reason']))
    if plan['secrets']:
        lines.append('Secrets moved to the vault-encrypted pm2_secrets.yml (names only):')
        for entry in plan['secrets']:
            lines.append('  - %s.%s -> %s (%s; %s)' % (entry['app'], entry['key'], entry['var'], entry['reason'], ', '.join(entry['groups'])))
    if plan['renamed']:
        lines.append('Renamed apps (PM2 names must match ^[a-z0-9][a-z0-9.-]*$):')
        for entry in plan['renamed']:
            lines.append('  - %s -> %s' % (entry['from'], entry['to']))
    if plan['notes']:
        lines.append('Notes:')
        lines.extend('  - %s' % note for note in plan['notes'])
    return lines


def render_group_vars(plan, group, user, with_report):
    head = ['Generated by nodefleet.pm2.pm2_import from %s.' % plan['source']]
    if group == 'all':
        head.append('Apps for the nodefleet.pm2.pm2_deploy role and their env (base "env" block) for nodefleet.pm2.pm2_env.')
        data = {'pm2_deploy_user': user, 'pm2_deploy_apps': plan['deploy_apps']}
    else:
        head.append('Env of the env_%s block merged over "env" (as pm2 start --env %s does), for the hosts of group %s.'
                    % (group, group, group))
        data = {}
    apps = plan['groups'].get(group, {})
    data['pm2_env_apps'] = [apps[name] for name in sorted(apps)]
    lines = head
    if with_report:
        report = report_lines(plan)
        if report:
            lines = head + [''] + report
    return '---\n' + _comment(lines) + to_yaml(data)


def render_secrets(plan, group):
    """Plain text of a secrets file (to be encrypted by the caller)."""
    return '---\n' + to_yaml(dict(sorted(plan['vault'].get(group, {}).items())))


def render_inventory(plan):
    groups = sorted(g for g in plan['groups'] if g != 'all')
    head = ['Generated by nodefleet.pm2.pm2_import from %s: one group per env_* block.' % plan['source'],
            'Add your hosts under the group of their environment; hosts in no group get the base "env" block.']
    data = {'all': {'children': {g: {'hosts': {}} for g in groups}} if groups else {'hosts': {}}}
    return '---\n' + _comment(head) + to_yaml(data)


def output_files(plan, user='app'):
    """{relative path: (text, encrypt)} of everything the import writes."""
    files = {'hosts.yml': (render_inventory(plan), False)}
    for group in sorted(plan['groups']):
        files['group_vars/%s/pm2_apps.yml' % group] = (render_group_vars(plan, group, user, group == 'all'), False)
        if plan['vault'].get(group):
            files['group_vars/%s/pm2_secrets.yml' % group] = (render_secrets(plan, group), True)
    return files


def secret_values(plan):
    """Every secret value, for masking (no_log) in results and errors."""
    values = set()
    for group in plan['vault'].values():
        for value in group.values():
            values.add(str(value))
    return values
