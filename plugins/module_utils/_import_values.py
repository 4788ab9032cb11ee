# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_import: how the values of an ecosystem file are read (each raises ValueError without the value in the
message) and the PM2 defaults that depend on what an app leaves out."""

from __future__ import annotations

import json
import os
import re
import shlex
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.nodefleet.pm2.plugins.module_utils._import_secrets import looks_secret
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import BY_NAME
from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import MAX_INSTANCES, NODE_INTERPRETERS

Plan = Dict[str, Any]
UNSUPPORTED_MARK = '__nodefleet_unsupported__'


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError('expected an integer')
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.match(r'^-?\d+$', value.strip()):
        return int(value)
    raise ValueError('expected an integer (milliseconds)')


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ('true', 'false', 'yes', 'no'):
        return value.lower() in ('true', 'yes')
    if value in (0, 1):
        return bool(value)
    raise ValueError('expected a boolean')


def _to_list(value: Any) -> List[str]:
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    raise ValueError('expected a list of strings or a string')


def _to_exec_mode(value: Any) -> str:
    mode = str(value).replace('_mode', '')
    if mode not in ('fork', 'cluster'):
        raise ValueError('expected fork or cluster')
    return mode


def _to_instances(value: Any) -> Any:
    """A whole number (0 and negative ones too: pm2_defaults and pm2_app read them) or max, within pm2_app's limit."""
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
        # pm2_app's own limit (more only on a host with more CPUs: `max` there); more than that is a typo
        raise ValueError('more than %d processes' % MAX_INSTANCES)
    return value


def _to_watch(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError('expected a boolean or a list of paths')


def _to_size_or_duration(value: Any) -> Any:
    """PM2 parses '300M' and '10s' itself, as pm2_app does: kept as given."""
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return value
    raise ValueError('expected a number or a string')


def _to_str(value: Any) -> str:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError('expected a string')


CONVERTERS: Dict[str, Callable[[Any], Any]] = {
    'int': _to_int, 'bool': _to_bool, 'list': _to_list, 'instances': _to_instances, 'watch': _to_watch,
    'size': _to_size_or_duration, 'duration': _to_size_or_duration, 'str': _to_str, 'path': _to_str, 'choice': _to_str,
}


def convert(field: str, value: Any) -> Any:
    """Convert one supported field; raise ValueError (no value in the message) when it cannot be."""
    if isinstance(value, dict) and UNSUPPORTED_MARK in value:
        raise ValueError('a %s, not data' % value[UNSUPPORTED_MARK])
    if field == 'exec_mode':
        return _to_exec_mode(value)
    option = BY_NAME[field]
    converted = CONVERTERS[option.kind](value)
    if option.choices and converted not in option.choices:
        raise ValueError('expected one of %s' % ', '.join(option.choices))
    return converted


def kind_of(value: Any) -> str:
    """A value's kind for error messages (never the value: it may be a secret)."""
    if isinstance(value, dict) and UNSUPPORTED_MARK in value:
        return 'a %s' % value[UNSUPPORTED_MARK]
    for types, word in ((bool, 'a boolean'), ((int, float), 'a number'), (str, 'a string'), (list, 'a list'),
                        (dict, 'an object'), (type(None), 'null')):
        if isinstance(value, types):
            return word
    return 'a %s' % type(value).__name__


def display(value: Any) -> Optional[str]:
    if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 80 and looks_secret('', value) is None):
        return json.dumps(value)
    return None


# Interpreters PM2 picks by script extension when the file names none (lib/API/interpreter.json). Scripts without
# an entry run with node unless they are binaries, which only the file's content tells.
PM2_INTERPRETERS = {'.sh': 'bash', '.py': 'python', '.rb': 'ruby', '.php': 'php', '.pl': 'perl', '.js': 'node',
                    '.coffee': 'coffee', '.ls': 'lsc', '.ts': 'bun', '.tsx': 'bun'}


def _pm2_interpreter(interpreter: Optional[str], script: str) -> Optional[str]:
    """The interpreter PM2 runs the script with, or None when only the script's content tells (binary or node)."""
    if interpreter:
        return os.path.basename(interpreter)
    ext = os.path.splitext(script)[1]
    if ext in PM2_INTERPRETERS:
        return PM2_INTERPRETERS[ext]
    return 'node' if ext in ('.cjs', '.mjs') else None


def pm2_defaults(name: str, script: str, item: Dict[str, Any], fields: Dict[str, Any], plan: Plan) -> None:
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
