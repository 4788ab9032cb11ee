# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""PM2 ecosystem file import (controller side, used by the pm2_import action plugin): loading the file.

One sandboxed evaluation plus three pure stages in their own files:

- ``load_ecosystem()`` (here): JSON and YAML are parsed in Python; JavaScript (CommonJS, ES module) is evaluated by a
  child ``node`` process (``EVALUATOR_JS``) that only prints JSON on stdout.
- ``_import_plan.plan_import()``: maps the apps to ``pm2_deploy_apps`` / ``pm2_env_apps``, one group per ``env_*``
  block, moves secret-looking env values out (``_import_secrets.looks_secret()``) and lists every key it cannot map.
- ``_import_render.output_files()``: the text of the files; the caller encrypts the secrets file and writes.

No error message built here contains a value from the ecosystem file: values may be secrets.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover - yaml ships with ansible-core on the controller
    yaml = None
    HAS_YAML = False

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import EcosystemError
from ansible_collections.nodefleet.pm2.plugins.module_utils._import_secrets import redact_text


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
