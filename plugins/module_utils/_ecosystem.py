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
import selectors
import shlex
import shutil
import subprocess
import tempfile
import textwrap
import time

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
# Bytes read from the evaluator: the JSON result, and what the file prints (counted, never kept). Both are capped
# while they are read: past the cap the child is killed.
MAX_OUTPUT = 4 * 1024 * 1024
MAX_PRINTED = 4 * 1024 * 1024
# Node.js 20 is the first with the permission model, which the sandbox needs.
MIN_NODE_MAJOR = 20
# Heap of the child node: an ecosystem file is a few kilobytes of data.
NODE_HEAP_MB = 256

# Runs in a child node process: cwd and HOME in an empty temp dir, a minimal environment, the permission model on
# (no file writes, no child processes, no workers, no addons, no WASI, no inspector; reads limited to the ecosystem
# file's directory and the temp dir), eval and new Function off. Before the file is loaded:
# - network modules are stubbed (CommonJS and ES module imports see the same stubbed builtins);
# - signals are refused: process.kill (and the binding behind it) and os.setPriority throw, so the file cannot
#   touch the Ansible worker (its parent) or any other process;
# - every fs function that takes a path checks where the path really leads: the permission model checks the path
#   as written and then follows symlinks, so a link in the allowed directory would read any file. A path whose real
#   location is outside the allowed directories is refused (and reported back, without content). Module loading
#   (require, import) resolves symlinks itself, and the permission model then checks the real path.
# It writes one JSON document to the result fd (argv[4]): {"config": ..., "refused": [...]} or {"error": {...}};
# stdout and stderr are the file's own (console.log at load time), counted by the caller and never shown.
# The error carries the error's class and first message line only: Node's own uncaught-error output would quote
# the offending source line, which may hold a secret.
EVALUATOR_JS = r"""'use strict';
const Module = require('module');
const fs = require('fs');
const os = require('os');
const path = require('path');
const url = require('url');
const [file, esmCopy, resultFd, rootsJson] = process.argv.slice(2);
const writeSync = fs.writeSync;
const stringify = JSON.stringify;
const exit = process.exit;
const refused = [];
const blocked = (what) => function () { throw new Error('nodefleet pm2_import: ' + what + ' is disabled while evaluating an ecosystem file'); };

// Signals: nothing but this process may be affected.
for (const fn of ['kill', '_kill']) {
  Object.defineProperty(process, fn, { value: blocked('process.' + fn), writable: false, configurable: false, enumerable: true });
}
Object.defineProperty(os, 'setPriority', { value: blocked('os.setPriority'), writable: false, configurable: false });

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
stub('wasi', ['WASI']);
if (typeof globalThis.fetch === 'function') globalThis.fetch = blocked('fetch');
if (typeof globalThis.WebSocket === 'function') globalThis.WebSocket = blocked('WebSocket');

// Files: a path must really lead into an allowed directory.
const roots = JSON.parse(rootsJson);
const realpath = fs.realpathSync.native;
const inside = (p) => roots.some((r) => p === r || p.startsWith(r + path.sep));
const asPath = (p) => {
  if (typeof p === 'string') return p;
  if (p instanceof URL) return url.fileURLToPath(p);
  if (p instanceof Uint8Array) return Buffer.from(p).toString();
  return null;  // a file descriptor, or nothing
};
const check = (fn, arg) => {
  const given = asPath(arg);
  if (given === null) return;
  const abs = path.resolve(given);
  let real;
  try {
    real = realpath(abs);
  } catch (e) {
    if (!(e && (e.code === 'ENOENT' || e.code === 'ENOTDIR'))) real = null;
    else { try { real = path.join(realpath(path.dirname(abs)), path.basename(abs)); } catch (e2) { real = abs; } }
  }
  if (real !== null && inside(real)) return;
  if (refused.length < 20 && !refused.includes(abs)) refused.push(abs);
  const err = new Error('nodefleet pm2_import: ' + fn + ' of ' + abs
    + ' refused: it is outside the directory of the ecosystem file (or leads there through a symlink)');
  err.code = 'ERR_ACCESS_DENIED';
  throw err;
};
const TWO_PATHS = new Set(['copyFile', 'cp', 'link', 'rename', 'symlink']);
const guard = (mod, prefix) => {
  for (const name of Object.keys(mod)) {
    const orig = mod[name];
    if (typeof orig !== 'function' || /^[A-Z_]/.test(name) || orig.__nodefleet_guarded__) continue;
    const base = name.replace(/Sync$/, '');
    const wrapped = function (...args) {
      try {
        check(prefix + name, args[0]);
        if (TWO_PATHS.has(base)) check(prefix + name, args[1]);
      } catch (e) {
        // exists never throws: a path outside does not exist for the file.
        if (name === 'existsSync') return false;
        if (name === 'exists' && typeof args[1] === 'function') { process.nextTick(args[1], false); return undefined; }
        throw e;
      }
      return orig.apply(this, args);
    };
    for (const k of Object.keys(orig)) wrapped[k] = orig[k];  // realpath.native
    if (typeof orig.native === 'function') {
      const native = orig.native;
      wrapped.native = function (...args) { check(prefix + name + '.native', args[0]); return native.apply(this, args); };
    }
    Object.defineProperty(wrapped, '__nodefleet_guarded__', { value: true });
    // Still writable: libraries such as graceful-fs wrap fs functions in turn. Whoever replaces one has no
    // unguarded original to call.
    mod[name] = wrapped;
  }
};
guard(fs.promises, 'fs.promises.');
guard(fs, 'fs.');
try { Module.syncBuiltinESMExports(); } catch (e) { /* old node */ }

const out = (doc) => { writeSync(Number(resultFd), stringify(doc)); exit.call(process, 0); };
// Some files stop on a missing variable with process.exit(1): make that an error that says so.
process.exit = function (code) { throw new Error('the ecosystem file called process.exit(' + (code === undefined ? '' : code) + ')'); };
const firstLine = (e) => String((e && e.message) || e).split('\n')[0].slice(0, 300);
const fail = (kind, e) => out({ error: { kind, name: (e && e.name) || 'Error', message: firstLine(e) }, refused });
// An error thrown later (a timer, a stream without an error handler) is the file's error too, not a crash.
process.on('uncaughtException', (e) => fail('load', e));
process.on('unhandledRejection', (e) => fail('load', e));

// Plain data only, and not more of it than fits the result: a structure that shares its parts (a "billion laughs"
// of arrays) would otherwise be expanded here.
const MAX_NODES = 200000;
let nodes = 0;
function plain(value, seen, depth) {
  if (++nodes > MAX_NODES) throw new Error('the exported object is too large (more than ' + MAX_NODES + ' values)');
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
  let config;
  try {
    config = plain(exported, new Set(), 0);
  } catch (e) {
    return fail('serialise', e);
  }
  out({ config, refused });
}
main().catch((e) => fail('load', e));
"""


def _node_major(node):
    try:
        proc = subprocess.run([node, '--version'], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        raise EcosystemError('node_executable: cannot run %s; install Node.js %d or later on the controller or set node_executable'
                             % (node, MIN_NODE_MAJOR))
    match = re.match(r'^v(\d+)\.', proc.stdout.strip())
    if not match:
        raise EcosystemError('node_executable: cannot tell the version of %s' % node)
    return int(match.group(1))


def _kill(proc):
    try:
        proc.kill()
    except OSError:
        pass
    proc.wait()


def _run_bounded(argv, cwd, env, result_pipe, timeout, path):
    """Run the evaluator; return (result bytes, {'stdout': n, 'stderr': n}, returncode).

    Reads the result pipe, stdout and stderr as they are produced: the result is kept up to MAX_OUTPUT, the file's
    own output is only counted (up to MAX_PRINTED). Past either cap, or past the timeout, the child is killed, so the
    controller's memory stays bounded whatever the file does.
    """
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(result_pipe[1],), start_new_session=True)
    except OSError:
        os.close(result_pipe[0])
        raise
    finally:
        os.close(result_pipe[1])
    streams = {proc.stdout.fileno(): 'stdout', proc.stderr.fileno(): 'stderr', result_pipe[0]: 'result'}
    result = bytearray()
    printed = {'stdout': 0, 'stderr': 0}
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    try:
        for fd in streams:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill(proc)
                raise EcosystemError('evaluating %s with node took longer than %s s (timeout)' % (path, timeout))
            for key, _events in selector.select(remaining):
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                if streams[key.fd] == 'result':
                    result += chunk
                    if len(result) > MAX_OUTPUT:
                        _kill(proc)
                        raise EcosystemError('the evaluated ecosystem file %s is larger than %d bytes' % (path, MAX_OUTPUT))
                else:
                    printed[streams[key.fd]] += len(chunk)
                    if sum(printed.values()) > MAX_PRINTED:
                        _kill(proc)
                        raise EcosystemError('the ecosystem file %s printed more than %d bytes while it was evaluated (stopped)'
                                             % (path, MAX_PRINTED))
        try:
            returncode = proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise EcosystemError('evaluating %s with node took longer than %s s (timeout)' % (path, timeout))
    finally:
        selector.close()
        os.close(result_pipe[0])
        proc.stdout.close()
        proc.stderr.close()
        if proc.poll() is None:
            _kill(proc)
    return bytes(result), printed, returncode


def evaluate_js(path, node='node', timeout=10, environ=None, notes=None):
    """Evaluate a JavaScript ecosystem file in a sandboxed child node process; return the exported object.

    What the evaluation reports besides the object (output printed at load time, reads refused) is appended to
    `notes` (a list) when given.
    """
    node_path = shutil.which(node) if os.sep not in node else (node if os.path.isfile(node) else None)
    if not node_path:
        raise EcosystemError('node_executable: %s not found on the controller; install Node.js %d or later or set node_executable'
                             % (node, MIN_NODE_MAJOR))
    major = _node_major(node_path)
    if major < MIN_NODE_MAJOR:
        raise EcosystemError('node_executable: %s is Node.js %d; evaluating a JavaScript ecosystem file needs Node.js %d or later '
                             '(its permission model keeps the file from reading, writing or running anything else). Set '
                             'node_executable to a newer node, or import a JSON or YAML copy of the file'
                             % (node_path, major, MIN_NODE_MAJOR))
    src = os.path.realpath(path)
    src_dir = os.path.dirname(src)
    workdir = os.path.realpath(tempfile.mkdtemp(prefix='nodefleet-pm2-import-'))
    try:
        evaluator = os.path.join(workdir, 'evaluate.cjs')
        with open(evaluator, 'w') as handle:
            handle.write(EVALUATOR_JS)
        esm_copy = os.path.join(workdir, 'ecosystem.mjs')
        shutil.copyfile(src, esm_copy)
        argv = [node_path, '--permission' if major >= 23 else '--experimental-permission']
        for allowed in (src_dir, workdir):
            argv.append('--allow-fs-read=%s' % (allowed + ('/*' if major < 22 else '')))
        argv.append('--allow-fs-read=%s' % src)
        argv += ['--no-warnings', '--disallow-code-generation-from-strings', '--max-old-space-size=%d' % NODE_HEAP_MB]
        result_pipe = os.pipe()
        argv += [evaluator, src, esm_copy, str(result_pipe[1]), json.dumps([src_dir, workdir])]
        env = {'PATH': '/usr/bin:/bin', 'HOME': workdir, 'LANG': 'C.UTF-8', 'NODE_OPTIONS': ''}
        env.update(environ or {})
        try:
            raw, printed, returncode = _run_bounded(argv, workdir, env, result_pipe, timeout, path)
        except OSError as exc:
            raise EcosystemError('node_executable: cannot run %s: %s' % (node_path, exc.strerror or type(exc).__name__))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    try:
        doc = json.loads(raw.decode('utf-8'))
        if not isinstance(doc, dict):
            raise ValueError
    except ValueError:
        # stderr is not shown: it may quote source lines.
        if returncode is not None and returncode < 0:
            how = 'node was killed by signal %d%s' % (-returncode, ' (out of memory? the evaluation gets %d MB of heap)' % NODE_HEAP_MB
                                                      if -returncode == 6 else '')
        else:
            how = 'exit code %s' % returncode
        raise EcosystemError('node could not evaluate %s (%s, no result)' % (path, how))
    refused = [p for p in doc.get('refused') or [] if isinstance(p, str)]
    if notes is not None:
        for stream in ('stdout', 'stderr'):
            if printed[stream]:
                notes.append('%s printed %d bytes on %s while it was evaluated (ignored and not shown: it may hold secrets; '
                             'the import read the exported object only)' % (os.path.basename(path), printed[stream], stream))
        for refused_path in refused:
            notes.append('%s tried to use %s, which is outside its directory or leads there through a symlink; refused '
                         '(give values the file reads from elsewhere with the environment option)' % (os.path.basename(path), refused_path))
    if 'error' in doc:
        err = doc['error'] if isinstance(doc['error'], dict) else {}
        raise EcosystemError('node could not %s %s: %s: %s%s' % (
            'load' if err.get('kind') == 'load' else 'serialise', path, err.get('name'), redact_text(err.get('message', '')),
            ' (reads refused, outside its directory: %s)' % ', '.join(refused) if refused else ''))
    return doc.get('config')


def load_ecosystem(path, node='node', timeout=10, environ=None, notes=None):
    """Return the object an ecosystem file defines (JSON, YAML, CommonJS or ES module).

    Notes about the evaluation of a JavaScript file are appended to `notes` when it is a list.
    """
    if not os.path.isfile(path):
        raise EcosystemError('src: %s is not a file' % path)
    ext = os.path.splitext(path)[1].lower()
    if ext in JS_EXTENSIONS:
        return evaluate_js(path, node=node, timeout=timeout, environ=environ, notes=notes)
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
# Options of pm2_import

# The OS user rule of nodefleet.pm2.pm2_runtime (pm2_runtime_users[].name).
USER_RE = re.compile(r'^[a-z_][a-z0-9_-]{0,31}$')
HEALTH_KEYS = ('port', 'path', 'url', 'status', 'retries', 'delay', 'timeout', 'command')
MAX_TIMEOUT = 600
ECOSYSTEM_EXTENSIONS = JS_EXTENSIONS + JSON_EXTENSIONS + YAML_EXTENSIONS


def _whole(value, low, high):
    """value as an int in [low, high], or None (accepts digit strings: inventory values often are strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and re.match(r'^\d+$', value.strip()):
        value = int(value)
    if isinstance(value, int) and low <= value <= high:
        return value
    return None


def check_health(health):
    """The health option, checked like pm2_deploy_apps[].health; returns it with numbers as numbers."""
    if not isinstance(health, dict):
        raise EcosystemError('health: must be a dict like {port: 3000, path: /ready} or {command: ...}')
    unknown = sorted(set(health) - set(HEALTH_KEYS))
    if unknown:
        raise EcosystemError('health: unknown key %s (known: %s)' % (', '.join(map(str, unknown)), ', '.join(HEALTH_KEYS)))
    checked = dict(health)
    if 'command' in health:
        if not isinstance(health['command'], str) or not health['command'].strip():
            raise EcosystemError('health.command: must be a non-empty command line')
        both = sorted({'port', 'url', 'path'} & set(health))
        if both:
            raise EcosystemError('health: give command or an HTTP check (%s), not both' % ', '.join(both))
    elif 'url' in health:
        if not isinstance(health['url'], str) or not re.match(r'^https?://\S+$', health['url']):
            raise EcosystemError('health.url: must be an http:// or https:// URL')
        if 'port' in health or 'path' in health:
            raise EcosystemError('health: give url, or port (and path), not both')
    elif 'port' not in health:
        raise EcosystemError('health: needs port (and path), url or command')
    if 'port' in health:
        checked['port'] = _whole(health['port'], 1, 65535)
        if checked['port'] is None:
            raise EcosystemError('health.port: must be a port number from 1 to 65535')
    if 'path' in health and (not isinstance(health['path'], str) or not health['path'].startswith('/')):
        raise EcosystemError('health.path: must start with /')
    for key, low, high in (('status', 100, 599), ('retries', 0, 1000), ('delay', 0, 3600), ('timeout', 1, 3600)):
        if key in health:
            checked[key] = _whole(health[key], low, high)
            if checked[key] is None:
                raise EcosystemError('health.%s: must be a whole number from %d to %d' % (key, low, high))
    return checked


def check_options(params):
    """Check pm2_import's options before anything is read or written; raise EcosystemError naming the option.

    Returns the options with `health` and `environment` normalised. Paths are expected absolute.
    """
    checked = dict(params)
    src = params['src']
    ext = os.path.splitext(src)[1].lower()
    if not os.path.exists(src):
        raise EcosystemError('src: %s does not exist' % src)
    if not os.path.isfile(src):
        raise EcosystemError('src: %s is not a file' % src)
    if ext not in ECOSYSTEM_EXTENSIONS:
        raise EcosystemError('src: %s: unknown ecosystem file type %r (expected %s)' % (src, ext, ', '.join(ECOSYSTEM_EXTENSIONS)))
    dest = params['dest']
    existing = dest
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise EcosystemError('dest: %s is not a directory' % existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EcosystemError('dest: cannot write to %s (permission denied)' % existing)
    vault_file = params.get('vault_password_file')
    if vault_file is not None:
        if not os.path.exists(vault_file):
            raise EcosystemError('vault_password_file: %s does not exist' % vault_file)
        if not os.path.isfile(vault_file):
            raise EcosystemError('vault_password_file: %s is not a file' % vault_file)
    if not params['vault_id'] or re.search(r'[;\s]', params['vault_id']):
        raise EcosystemError('vault_id: must be a non-empty label without ";" or spaces')
    user = params['user']
    if not USER_RE.match(user):
        raise EcosystemError('user: %r is not a user name nodefleet.pm2.pm2_runtime can create (%s)' % (user, USER_RE.pattern))
    if user == 'root':
        raise EcosystemError('user: root is refused: the apps run as an unprivileged user that nodefleet.pm2.pm2_runtime creates')
    if params.get('health') is not None:
        checked['health'] = check_health(params['health'])
    for option in ('secret_names', 'plain_names'):
        for name in params[option]:
            if not ENV_KEY_RE.match(name):
                raise EcosystemError('%s: %r is not an environment variable name' % (option, name))
    both = sorted({n.upper() for n in params['secret_names']} & {n.upper() for n in params['plain_names']})
    if both:
        raise EcosystemError('secret_names and plain_names: both list %s' % ', '.join(both))
    if not params['node_executable'] or not params['node_executable'].strip():
        raise EcosystemError('node_executable: must name the node binary')
    if not 1 <= params['timeout'] <= MAX_TIMEOUT:
        raise EcosystemError('timeout: must be from 1 to %d seconds' % MAX_TIMEOUT)
    environment = {}
    for name, value in params['environment'].items():
        if not isinstance(name, str) or not ENV_KEY_RE.match(name):
            raise EcosystemError('environment: %r is not an environment variable name' % (name,))
        if name.startswith('NODE_') and name != 'NODE_ENV':
            raise EcosystemError('environment.%s: refused: NODE_* variables (but NODE_ENV) change how node runs the sandbox' % name)
        if value is None or isinstance(value, (dict, list)):
            raise EcosystemError('environment.%s: must be a string, number or boolean (got %s)' % (name, _kind(value)))
        environment[name] = str(value).lower() if isinstance(value, bool) else str(value)
    checked['environment'] = environment
    return checked


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
# More processes than this per app is a typo, not a plan (PM2 would try to start them all).
MAX_INSTANCES = 1024
# What PM2 treats as "no log file" for out_file, error_file and log_file.
NO_LOG = ('NULL', '/dev/null')


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
            raise ValueError('expected a whole number or max')
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and re.match(r'^-?\d+$', value.strip()):
            value = int(value)
        if value == 'max':
            return value
        if not isinstance(value, int):
            raise ValueError('expected a whole number or max')
        if abs(value) > MAX_INSTANCES:
            raise ValueError('more than %d processes' % MAX_INSTANCES)
        return value
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
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError('expected a string')
        value = str(value)
        choices = APP_OPTIONS[field].get('choices')
        if choices and value not in choices:
            raise ValueError('expected one of %s' % ', '.join(choices))
        return value
    return value


def _kind(value):
    """A value's kind for error messages (never the value: it may be a secret)."""
    if isinstance(value, dict) and UNSUPPORTED_MARK in value:
        return 'a %s' % value[UNSUPPORTED_MARK]
    for types, word in ((bool, 'a boolean'), ((int, float), 'a number'), (str, 'a string'), (list, 'a list'),
                        (dict, 'an object'), (type(None), 'null')):
        if isinstance(value, types):
            return word
    return 'a %s' % type(value).__name__


def _ordinal(index):
    number = index + 1
    suffix = 'th' if 10 <= number % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(number % 10, 'th')
    return '%d%s' % (number, suffix)


def _label(raw, index):
    """How an error names an app of the file: its name, else its script, else its position."""
    name = raw.get('name') if isinstance(raw, dict) else None
    if isinstance(name, (str, int)) and not isinstance(name, bool) and str(name) != '':
        return 'app %s' % name
    script = raw.get('script') if isinstance(raw, dict) else None
    if isinstance(script, str) and script:
        return 'the app with script %s (no name)' % script
    return 'the %s app (no name)' % _ordinal(index)


def _apps_of(config):
    if isinstance(config, list):
        apps, top = config, {}
    elif isinstance(config, dict):
        apps = config.get('apps')
        if apps is None and ('script' in config or 'name' in config):
            apps, top = [config], {}
        else:
            if isinstance(apps, dict):
                apps = [apps]
            if not isinstance(apps, list):
                raise EcosystemError('apps: the ecosystem file defines no "apps" list (got %s)' % (
                    'nothing' if apps is None else _kind(apps)))
            top = {k: v for k, v in config.items() if k != 'apps'}
    else:
        raise EcosystemError('the ecosystem file must export an object with an "apps" list (got %s)' % _kind(config))
    if not apps:
        raise EcosystemError('apps: the list is empty; the ecosystem file defines no app')
    return apps, top


def _display(value):
    if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 80 and looks_secret('', value) is None):
        return json.dumps(value)
    return None


def plan_import(config, health=None, secret_names=(), plain_names=(), source='', notes=()):
    """Map an evaluated ecosystem object to inventory data. Pure; raises EcosystemError naming the app and field.

    Returns a dict:
      deploy_apps: list of pm2_deploy_apps items
      groups: {group: {app: {'vars': {...}, 'secrets': {KEY: var}}}} ('all' is the base env)
      vault: {group: {var: value}} secret values (only the caller may see them)
      logrotate: list of pm2_logrotate_apps items (the apps' log files under the pm2_deploy layout)
      unmapped: [{app, key, reason, value?}], secrets: [{app, key, var, reason, blocks}], renamed: [{from, to}],
      notes: [str] (starting with `notes`, what the evaluation of the file reported)
    """
    apps, top = _apps_of(config)
    plan = dict(deploy_apps=[], groups={'all': {}}, vault={'all': {}}, logrotate=[], unmapped=[], secrets=[], renamed=[],
                notes=list(notes), source=source)
    for key in sorted(top):
        plan['unmapped'].append(dict(app=None, key=key, reason=HINTS.get(key, 'unknown top-level key of the ecosystem file')))
    seen = {}
    envs_per_app = []
    for index, raw in enumerate(apps):
        if not isinstance(raw, dict):
            raise EcosystemError('apps: the %s entry is not an app object (got %s)' % (_ordinal(index), _kind(raw)))
        label = _label(raw, index)
        orig_name = raw.get('name')
        if orig_name is None or orig_name == '':
            script = raw.get('script')
            if not isinstance(script, str) or not script:
                raise EcosystemError('%s: has neither name nor script' % label)
            orig_name = os.path.splitext(os.path.basename(script))[0]
            plan['notes'].append('%s has no name; PM2 would call it %s after its script' % (label, orig_name))
        if not isinstance(orig_name, (str, int)) or isinstance(orig_name, bool):
            raise EcosystemError('%s: name must be a string (got %s)' % (label, _kind(orig_name)))
        orig_name = str(orig_name)
        name = normalise_app_name(orig_name)
        if name != orig_name:
            plan['renamed'].append({'from': orig_name, 'to': name})
        if name in seen:
            raise EcosystemError('apps %s and %s both map to the app name %s; rename one' % (seen[name], orig_name, name))
        seen[name] = orig_name
        item, pm2, env_blocks, logs = _map_app(name, raw, plan)
        envs_per_app.append((name, item, pm2, env_blocks, logs))

    all_groups = set()
    for name, item, pm2, env_blocks, logs in envs_per_app:
        all_groups.update(group_name(key[4:]) for key in env_blocks if key != 'env')
    if 'all' in all_groups:
        culprits = [name for name, _i, _p, blocks, _l in envs_per_app if 'all' in {group_name(k[4:]) for k in blocks if k != 'env'}]
        raise EcosystemError('app %s: an env block named env_all would clash with the base env (group all); rename it'
                             % ', '.join(culprits))
    log_owners = {}
    for name, item, pm2, env_blocks, logs in envs_per_app:
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
        rotation = _logrotate_entry(name, pm2, logs, log_owners, plan)
        if rotation:
            plan['logrotate'].append(rotation)
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


# Keys some teams put into ecosystem files for log rotation; PM2 ignores them, nodefleet.pm2.pm2_logrotate does it.
LOGROTATE_KEYS = {'log_file_max_size': 'size', 'log_file_max_files': 'rotate'}
SIZE_RE = re.compile(r'^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$', re.IGNORECASE)


def _logrotate_value(key, value):
    """log_file_max_size -> logrotate's size (10M, 512k, 1G, bytes); log_file_max_files -> rotate (a count)."""
    if isinstance(value, bool):
        raise ValueError('expected %s' % ('a size like 100M' if key == 'log_file_max_size' else 'a whole number'))
    if key == 'log_file_max_files':
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or value < 0:
            raise ValueError('expected a whole number of files to keep')
        return value
    if isinstance(value, int) and value >= 0:
        return str(value)
    match = SIZE_RE.match(value) if isinstance(value, str) else None
    if not match:
        raise ValueError('expected a size: a number with an optional K, M or G (like 100M or 100MB)')
    unit = match.group(2).lower()
    return match.group(1) + ('k' if unit == 'k' else unit.upper())


def _map_app(name, raw, plan):
    item = {'name': name}
    pm2 = {}
    env_blocks = {}
    fields = {}
    logs = {}
    where = 'app %s' % name
    for key in raw:
        value = raw[key]
        if key == 'name':
            continue
        if key == 'env' or key.startswith('env_') and key != 'env_file':
            if not isinstance(value, dict):
                raise EcosystemError('%s: %s must be an object of environment variables (got %s)' % (where, key, _kind(value)))
            env_blocks[key] = value
            continue
        if key in LOGROTATE_KEYS:
            try:
                logs[LOGROTATE_KEYS[key]] = _logrotate_value(key, value)
            except ValueError as exc:
                raise EcosystemError('%s: %s: %s' % (where, key, exc))
            continue
        canonical = ALIASES.get(key, key)
        if canonical == 'log_file' and isinstance(value, bool):
            # PM2's `log: true` is a combined log in its default place (<PM2_HOME>/logs/<name>.log); false is none.
            if value:
                plan['unmapped'].append(dict(app=name, key=key, value='true', reason='a combined log in PM2\'s default place is not '
                                             'supported by nodefleet.pm2.pm2_app: give log_file a path'))
            continue
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
            raise EcosystemError('%s: %s: %s (got %s)' % (where, key, exc, _kind(value)))
        if canonical != key:
            plan['notes'].append('%s: %s imported as %s' % (name, key, canonical))
        if canonical in ('args', 'node_args') and isinstance(value, str):
            plan['notes'].append('%s: %s string split into a list (shell words)' % (name, key))
        if canonical in ('out_file', 'error_file', 'log_file') and fields[canonical] == 'NULL':
            fields[canonical] = '/dev/null'  # the same for PM2; pm2_app would take NULL for a file name
        if isinstance(fields[canonical], str) and canonical not in ('script', 'cwd') and looks_secret(canonical, fields[canonical]):
            plan['notes'].append('%s: %s looks like it holds a secret; it is kept as is, move it out of the ecosystem file' % (name, canonical))

    script = fields.pop('script', None)
    if not script:
        raise EcosystemError('%s: script is missing' % where)
    cwd = fields.pop('cwd', None)
    rel_cwd = ''
    if cwd:
        if os.path.isabs(cwd):
            plan['notes'].append('%s: absolute cwd %s replaced by the release directory (pm2_deploy_to/current)' % (name, cwd))
        else:
            rel_cwd = os.path.normpath(cwd)
            if rel_cwd == '.':
                rel_cwd = ''
            elif rel_cwd == '..' or rel_cwd.startswith('../'):
                raise EcosystemError('%s: cwd %s leaves the project directory (the release)' % (where, cwd))
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
        if item['script'] == '..' or item['script'].startswith('../'):
            raise EcosystemError('%s: script %s leaves the project directory (the release)' % (where, script))
    if rel_cwd:
        pm2['cwd'] = '{{ pm2_deploy_to }}/current/' + rel_cwd
    for key in DEPLOY_TOP[2:]:
        if key in fields:
            item[key] = fields.pop(key)
    _pm2_defaults(name, script, item, fields, plan)
    for key in sorted(fields):
        pm2[key] = fields[key]
    logs['rel_cwd'] = rel_cwd
    return item, pm2, env_blocks, logs


# Where the pm2_deploy role puts a project (its default: /srv/<pm2_deploy_project>), as an expression that also works
# in plays without that role (pm2_logrotate in a site playbook).
DEPLOY_TO = '{{ pm2_deploy_to | default("/srv/" ~ (pm2_deploy_project | default("app"))) }}'
# pm2_deploy links these directories of every release to <pm2_deploy_to>/shared/ (pm2_deploy_shared_dirs' default).
SHARED_DIRS = ('logs', 'uploads', 'data')
# PM2's own log directory of the user that pm2_runtime creates (pm2_runtime_users' default home and PM2_HOME).
PM2_LOG_DIR = '/home/{{ pm2_deploy_user }}/.pm2/logs'
LOG_SUFFIX_RE = re.compile(r'-[0-9]+\.log$|\.log$')


def _log_location(name, rel_cwd, path, plan):
    """Where a log path of the file lands on a host deployed by pm2_deploy, or None (with a note) when unknown."""
    if path.startswith('~'):
        plan['notes'].append('%s: log file %s starts with ~: not rotated by pm2_logrotate (give an absolute path)' % (name, path))
        return None
    if os.path.isabs(path):
        return os.path.normpath(path)
    # pm2_app resolves a relative log path against the app's cwd, <pm2_deploy_to>/current[/<cwd>], as written.
    in_deploy_to = os.path.normpath(os.path.join('current', rel_cwd, path))
    if in_deploy_to == '..' or in_deploy_to.startswith('../'):
        plan['notes'].append('%s: log file %s lies outside pm2_deploy_to: not rotated by pm2_logrotate' % (name, path))
        return None
    parts = in_deploy_to.split('/')
    if parts[0] == 'current' and len(parts) > 2 and parts[1] in SHARED_DIRS:
        # The release's logs/ is a link to shared/logs: rotate the files where they really are.
        return '%s/shared/%s' % (DEPLOY_TO, '/'.join(parts[1:]))
    if parts[0] == 'current':
        plan['notes'].append('%s: log file %s is inside the release, not in a shared directory (%s): each release has its own, '
                             'and pm2_logrotate rotates the one of the current release' % (name, path, ', '.join(SHARED_DIRS)))
    return '%s/%s' % (DEPLOY_TO, in_deploy_to)


def _logrotate_entry(name, pm2, logs, owners, plan):
    """The pm2_logrotate_apps item of one app: its log files as PM2 writes them on a host deployed by pm2_deploy.

    PM2 writes <PM2_HOME>/logs/<name>-out.log and -error.log when the file gives no out_file / error_file, and a
    combined log only when log_file is given; without merge_logs, a path ending in .log gets -<pm_id> before the
    extension (x.log -> x-3.log, God.js of pm2 7.0.4), so the pattern x-[0-9]*.log is rotated instead.
    """
    entry = {'name': name, 'user': '{{ pm2_deploy_user }}'}
    merged = pm2.get('merge_logs') is True
    defaults = []
    paths = []
    for field, kind in (('out_file', 'out'), ('error_file', 'error'), ('log_file', None)):
        given = pm2.get(field)
        if given is None:
            if kind:
                defaults.append('%s/%s-%s.log' % (PM2_LOG_DIR, name, kind))
                if not merged:
                    defaults.append('%s/%s-%s-[0-9]*.log' % (PM2_LOG_DIR, name, kind))
            continue
        if given in NO_LOG:
            continue
        where = _log_location(name, logs['rel_cwd'], given, plan)
        if where is None:
            continue
        if not merged and where.endswith('.log'):
            where = LOG_SUFFIX_RE.sub('-[0-9]*.log', where)
        if where not in paths:
            paths.append(where)
    if paths:
        # Only PM2's default files: the role derives them itself (from the user's PM2_HOME); otherwise name them all.
        # logrotate refuses a file named by two configurations: a file shared by apps is rotated with the first.
        for path in paths:
            if path in owners:
                plan['notes'].append('%s: log file %s is also the log of %s: rotated with that app' % (name, path, owners[path]))
        entry['paths'] = defaults + [path for path in paths if path not in owners]
        owners.update((path, name) for path in paths if path not in owners)
        if not entry['paths']:
            return None
    for key in ('size', 'rotate'):
        if key in logs:
            entry[key] = logs[key]
    if logs.get('size') is not None or logs.get('rotate') is not None:
        plan['notes'].append('%s: %s imported into pm2_logrotate_apps (%s); PM2 itself ignores these keys' % (
            name, ' and '.join(k for k, v in LOGROTATE_KEYS.items() if v in logs),
            ', '.join('%s: %s' % (k, logs[k]) for k in ('size', 'rotate') if k in logs)))
    return entry


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
    bad_names = set()
    for block_key, block in env_blocks.items():
        for key, value in block.items():
            if value is None or isinstance(value, (dict, list)):
                raise EcosystemError('app %s: %s.%s must be a string, number or boolean (got %s)' % (name, block_key, key, _kind(value)))
            if not ENV_KEY_RE.match(key) or key.startswith('NODEFLEET_'):
                bad_names.add(key)
                plan['unmapped'].append(dict(app=name, key='%s.%s' % (block_key, key),
                                             reason='env name not allowed (^[A-Za-z_][A-Za-z0-9_]*$, prefix NODEFLEET_ reserved)'))
    base = env_blocks.get('env', {})
    own = {}
    block_of = {}
    for key, block in env_blocks.items():
        if key != 'env':
            grp = group_name(key[4:])
            if grp in own:
                raise EcosystemError('app %s: %s and %s both map to the inventory group %s; rename one' % (name, block_of[grp], key, grp))
            own[grp] = block
            block_of[grp] = key
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
            if key in bad_names:
                continue
            reason = looks_secret(key, value, secret_names, plain_names)
            if reason and key not in secret_keys:
                secret_keys[key] = reason

    for grp, env in blocks.items():
        entry = {'name': name, 'user': '{{ pm2_deploy_user }}', 'vars': {}, 'secrets': {}}
        for key in env:
            value = env[key]
            if key in bad_names:
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


def _section(comment, data):
    return _comment(comment) + to_yaml(data)


def render_group_vars(plan, group, user, with_report):
    head = ['Generated by nodefleet.pm2.pm2_import from %s.' % plan['source']]
    apps = plan['groups'].get(group, {})
    env_apps = {'pm2_env_apps': [apps[name] for name in sorted(apps)]}
    if group != 'all':
        head.append('Env of the env_%s block merged over "env" (as pm2 start --env %s does), for the hosts of group %s.'
                    % (group, group, group))
        return '---\n' + _comment(head) + to_yaml(env_apps)
    head.append('Everything the roles need for these apps: nodefleet.pm2.pm2_runtime (the app user), pm2_env (their env, base '
                '"env" block), pm2_logrotate (their logs) and pm2_deploy (the apps).')
    if with_report:
        report = report_lines(plan)
        if report:
            head = head + [''] + report
    sections = [
        _section(['The OS user whose PM2 daemon runs the apps.'], {'pm2_deploy_user': user}),
        _section(['nodefleet.pm2.pm2_runtime creates this user, its PM2_HOME and its PM2 daemon (unit pm2-<user>.service).',
                  'Defining pm2_runtime_users elsewhere too? Keep one list: the last file read wins.'],
                 {'pm2_runtime_users': [{'name': '{{ pm2_deploy_user }}'}]}),
        _section(['nodefleet.pm2.pm2_deploy starts these apps from <pm2_deploy_to>/current.'], {'pm2_deploy_apps': plan['deploy_apps']}),
        _section(['nodefleet.pm2.pm2_env renders their env files (names of secrets only; values in pm2_secrets.yml).'], env_apps),
    ]
    if plan['logrotate']:
        sections.append(_section(
            ['nodefleet.pm2.pm2_logrotate rotates their logs where PM2 writes them on a host deployed by pm2_deploy: relative',
             'log paths under <pm2_deploy_to>/shared/logs (the release\'s logs/ links there), PM2\'s defaults under the user\'s',
             'PM2_HOME/logs; -[0-9]* is the -<pm_id> PM2 adds without merge_logs. Keep one pm2_logrotate_apps list.'],
            {'pm2_logrotate_apps': plan['logrotate']}))
    return '---\n' + _comment(head) + '\n' + '\n'.join(sections)


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
