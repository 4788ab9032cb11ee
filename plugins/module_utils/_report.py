# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The failure report of apps that did not become ready: every failed app with its real status, its restarts since
the action, the supervisor's own reason and the tails of its logs, each app's block bounded and never cut."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error

Failure = Dict[str, Any]

LOG_LINES = 10       # per log stream and app
REASON_LINES = 5     # supervisor lines per app
LINE_CHARS = 300     # a longer line is cut (with a mark) so one line cannot crowd out the others

_PM2_LOG_PREFIX = re.compile(r'^\S+: PM2 (?:log|error): ')
# pm2.log lines that only say an app (re)started: not a reason.
_ROUTINE = re.compile(r'starting in -(?:fork|cluster) mode-|\] online$|^App name:\S+ id:\d+ online$')


def clip(line: str) -> str:
    return line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + ' [...]'


def last_lines(text: str, count: int = LOG_LINES) -> List[str]:
    return [clip(line) for line in text.splitlines() if line.strip()][-count:]


def squeeze(lines: Sequence[str], count: int = REASON_LINES) -> List[str]:
    """The last ``count`` distinct lines, each once, repeats counted: a crash loop repeats its reason."""
    seen: Dict[str, int] = {}
    for line in lines:
        seen[line] = seen.pop(line, 0) + 1  # re-inserted: ordered by last occurrence
    return [clip(line if n == 1 else '%s (%d times)' % (line, n)) for line, n in list(seen.items())[-count:]]


def pm2_reasons(log_text: str, name: str, pm_ids: Sequence[Any], script: Optional[str]) -> List[str]:
    """PM2's own lines about one app from pm2.log (exits, watch restarts, memory limit, too many restarts)."""
    marks = ['App [%s:' % name, 'for app %s - ' % name, 'app=%s ' % name]
    marks += ['Process %s restarted because' % i for i in pm_ids]
    if script:
        marks.append('Script %s had too many unstable restarts' % script)
    found = []
    for raw in log_text.splitlines():
        line = _PM2_LOG_PREFIX.sub('', raw.strip())
        if any(mark in line for mark in marks) and not _ROUTINE.search(line):
            found.append(line)
    return squeeze(found)


def instance_word(instance: Dict[str, Any], restarts_since: int) -> str:
    """What an instance really is: PM2 shows a crash-looping process as online between two crashes."""
    status = instance['status']
    if status == 'online' and not instance['pid']:
        return 'online without a process (pid 0)'
    if status == 'online' and restarts_since:
        return 'crash-looping (online between restarts)'
    return status or 'unknown'


def describe(name: str, supervisor: str, why: str, rows: Sequence[Dict[str, Any]], reason: List[str],
             logs: Dict[str, List[str]]) -> Failure:
    """One failed app. rows: {label, word, restarts} per instance; logs: {stream title: lines}."""
    status = ', '.join('%s %s' % (r['label'], r['word']) for r in rows) or 'no process'
    return {
        'app': name,
        'supervisor': supervisor,
        'why': why,
        'status': status,
        'restarts': sum(r['restarts'] for r in rows),
        'reason': reason,
        'logs': logs,
    }


def _block(failure: Failure) -> str:
    restarts = failure['restarts']
    lines = ['app %s %s: %s; %d restart%s since the action' % (failure['app'], failure['why'], failure['status'], restarts,
                                                               '' if restarts == 1 else 's')]
    lines.extend('  %s: %s' % (failure['supervisor'], line) for line in failure['reason'])
    for title, tail in failure['logs'].items():
        lines.append('  %s:' % title if tail else '  %s: (nothing written)' % title)
        lines.extend('    ' + line for line in tail)
    return '\n'.join(lines)


def failure_error(failures: List[Failure]) -> Pm2Error:
    """One error naming every failed app; the first one's keys stay at the top level (app, status, restarts,
    log_tail) as before."""
    first = failures[0]
    head = '' if len(failures) == 1 else '%d apps failed (%s):\n' % (len(failures), ', '.join(f['app'] for f in failures))
    log_tail = [line for tail in first['logs'].values() for line in tail]
    return Pm2Error(head + '\n'.join(_block(f) for f in failures), app=first['app'], status=first['status'],
                    restarts=first['restarts'], log_tail=log_tail, failures=failures)
