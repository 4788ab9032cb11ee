# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""PM2 ecosystem file import (controller side, used by the pm2_import action plugin): loading the file.

One sandboxed evaluation plus three pure stages in their own files:

- ``load_ecosystem()`` (here): JSON and YAML are parsed in Python; JavaScript (CommonJS, ES module) is evaluated by a
  child ``node`` process (``EVALUATOR_JS``, run by ``_ecosystem_child.run_bounded()``) that hands back JSON only.
- ``_import_plan.plan_import()``: maps the apps to ``pm2_deploy_apps`` / ``pm2_env_apps`` / ``pm2_logrotate_apps``
  (``_import_logs``), one group per ``env_*`` block, moves secret-looking env values out
  (``_import_secrets.looks_secret()``) and lists every key it cannot map.
- ``_import_render.output_files()``: the text of the files; the caller encrypts the secrets file and writes.

pm2_import's options are checked by ``_import_options.check_options()`` before any of it runs. No error message
built here contains a value from the ecosystem file: values may be secrets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from typing import Any, Dict, List, Optional

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover - yaml ships with ansible-core on the controller
    yaml = None
    HAS_YAML = False

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import EcosystemError
from ansible_collections.nodefleet.pm2.plugins.module_utils._ecosystem_child import run_bounded
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_secrets import redact_text


# ---------------------------------------------------------------------------------------------------------------
# Evaluation

JS_EXTENSIONS = ('.js', '.cjs', '.mjs')
JSON_EXTENSIONS = ('.json',)
YAML_EXTENSIONS = ('.yml', '.yaml')
ECOSYSTEM_EXTENSIONS = JS_EXTENSIONS + JSON_EXTENSIONS + YAML_EXTENSIONS
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


def _node_major(node: str) -> int:
    try:
        proc = subprocess.run([node, '--version'], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        raise EcosystemError('node_executable: cannot run %s; install Node.js %d or later on the controller or set node_executable'
                             % (node, MIN_NODE_MAJOR))
    match = re.match(r'^v(\d+)\.', proc.stdout.strip())
    if not match:
        raise EcosystemError('node_executable: cannot tell the version of %s' % node)
    return int(match.group(1))


def _node(node: str) -> tuple:
    """(path, major version) of a node that can run the sandbox, or EcosystemError naming node_executable."""
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
    return node_path, major


def _node_flags(major: int, src: str, roots: List[str]) -> List[str]:
    """The permission model (reads below roots and of src only, nothing else), no eval, a bounded heap."""
    flags = ['--permission' if major >= 23 else '--experimental-permission']
    flags += ['--allow-fs-read=%s' % (allowed + ('/*' if major < 22 else '')) for allowed in roots]
    flags.append('--allow-fs-read=%s' % src)
    return flags + ['--no-warnings', '--disallow-code-generation-from-strings', '--max-old-space-size=%d' % NODE_HEAP_MB]


def _run_evaluator(path: str, node: str, timeout: float, environ: Optional[Dict[str, str]]) -> tuple:
    """Run EVALUATOR_JS on path in an empty temporary directory; (result bytes, bytes printed, return code)."""
    node_path, major = _node(node)
    src = os.path.realpath(path)
    src_dir = os.path.dirname(src)
    workdir = os.path.realpath(tempfile.mkdtemp(prefix='nodefleet-pm2-import-'))
    try:
        evaluator = os.path.join(workdir, 'evaluate.cjs')
        with open(evaluator, 'w') as handle:
            handle.write(EVALUATOR_JS)
        esm_copy = os.path.join(workdir, 'ecosystem.mjs')
        shutil.copyfile(src, esm_copy)
        result_pipe = os.pipe()
        argv = [node_path] + _node_flags(major, src, [src_dir, workdir])
        argv += [evaluator, src, esm_copy, str(result_pipe[1]), json.dumps([src_dir, workdir])]
        env = {'PATH': '/usr/bin:/bin', 'HOME': workdir, 'LANG': 'C.UTF-8', 'NODE_OPTIONS': ''}
        env.update(environ or {})
        try:
            return run_bounded(argv, workdir, env, result_pipe, timeout, path, MAX_OUTPUT, MAX_PRINTED)
        except OSError as exc:
            raise EcosystemError('node_executable: cannot run %s: %s' % (node_path, exc.strerror or type(exc).__name__))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _result(path: str, raw: bytes, returncode: Optional[int]) -> Dict[str, Any]:
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
    return doc


def _evaluation_notes(name: str, printed: Dict[str, int], refused: List[str]) -> List[str]:
    notes = ['%s printed %d bytes on %s while it was evaluated (ignored and not shown: it may hold secrets; the import read the '
             'exported object only)' % (name, printed[stream], stream) for stream in ('stdout', 'stderr') if printed[stream]]
    notes += ['%s tried to use %s, which is outside its directory or leads there through a symlink; refused (give values the '
              'file reads from elsewhere with the environment option)' % (name, refused_path) for refused_path in refused]
    return notes


def evaluate_js(path: str, node: str = 'node', timeout: float = 10, environ: Optional[Dict[str, str]] = None,
                notes: Optional[List[str]] = None) -> Any:
    """Evaluate a JavaScript ecosystem file in a sandboxed child node process; return the exported object.

    What the evaluation reports besides the object (output printed at load time, reads refused) is appended to
    `notes` (a list) when given.
    """
    raw, printed, returncode = _run_evaluator(path, node, timeout, environ)
    doc = _result(path, raw, returncode)
    refused = [p for p in doc.get('refused') or [] if isinstance(p, str)]
    if notes is not None:
        notes.extend(_evaluation_notes(os.path.basename(path), printed, refused))
    if 'error' in doc:
        err = doc['error'] if isinstance(doc['error'], dict) else {}
        raise EcosystemError('node could not %s %s: %s: %s%s' % (
            'load' if err.get('kind') == 'load' else 'serialise', path, err.get('name'), redact_text(err.get('message', '')),
            ' (reads refused, outside its directory: %s)' % ', '.join(refused) if refused else ''))
    return doc.get('config')


def _parse(path: str, ext: str, text: str) -> Any:
    """A JSON or YAML file's object; errors give the problem and its position, never the offending line."""
    if ext in JSON_EXTENSIONS:
        try:
            return json.loads(text)
        except ValueError as exc:
            # json's message is "Expecting ... : line L column C (char N)", no content.
            raise EcosystemError('%s is not valid JSON: %s' % (path, getattr(exc, 'msg', 'syntax error')))
    if not HAS_YAML:
        raise EcosystemError('PyYAML is needed to read %s' % path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # str(exc) quotes the offending line; keep only the problem and its position.
        mark = getattr(exc, 'problem_mark', None)
        where = ' at line %d column %d' % (mark.line + 1, mark.column + 1) if mark else ''
        raise EcosystemError('%s is not valid YAML: %s%s' % (path, getattr(exc, 'problem', None) or 'syntax error', where))


def load_ecosystem(path: str, node: str = 'node', timeout: float = 10, environ: Optional[Dict[str, str]] = None,
                   notes: Optional[List[str]] = None) -> Any:
    """Return the object an ecosystem file defines (JSON, YAML, CommonJS or ES module).

    Notes about the evaluation of a JavaScript file are appended to `notes` when it is a list.
    """
    if not os.path.isfile(path):
        raise EcosystemError('src: %s is not a file' % path)
    ext = os.path.splitext(path)[1].lower()
    if ext in JS_EXTENSIONS:
        return evaluate_js(path, node=node, timeout=timeout, environ=environ, notes=notes)
    if ext not in ECOSYSTEM_EXTENSIONS:
        raise EcosystemError('%s: unknown ecosystem file type %r (expected .js, .cjs, .mjs, .json, .yml or .yaml)' % (path, ext))
    with open(path, 'rb') as handle:
        data = handle.read()
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        raise EcosystemError('%s is not UTF-8 text' % path)
    return _parse(path, ext, text)
