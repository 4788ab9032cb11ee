# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.nodefleet.pm2.plugins.module_utils._report import (
    describe,
    failure_error,
    instance_word,
    pm2_reasons,
    squeeze,
)

# Lines as PM2 7 writes them to $PM2_HOME/pm2.log (lib/God.js, lib/Watcher.js, lib/Worker.js).
PM2_LOG = """2025-06-01T10:00:00: PM2 log: App [watchy:4] starting in -fork mode-
2025-06-01T10:00:00: PM2 log: App [watchy:4] online
2025-06-01T10:00:01: PM2 log: Change detected on path marker.txt for app watchy - restarting
2025-06-01T10:00:01: PM2 log: Stopping app:watchy id:4
2025-06-01T10:00:01: PM2 log: App [watchy:4] exited with code [0] via signal [SIGINT]
2025-06-01T10:00:01: PM2 log: App [watchy:4] starting in -fork mode-
2025-06-01T10:00:02: PM2 log: Change detected on path marker.txt for app watchy - restarting
2025-06-01T10:00:02: PM2 log: App [crashy:5] exited with code [1] via signal [SIGINT]
2025-06-01T10:00:03: PM2 log: Script /srv/crashy/current/testapp.js had too many unstable restarts (16). Stopped. "errored"
2025-06-01T10:00:03: PM2 log: [PM2][WORKER] Process 6 restarted because it exceeds --max-memory-restart value (current_memory=1 max_memory_limit=0 [octets])
"""


def test_pm2_reasons_are_the_apps_own_lines_without_routine_starts():
    assert pm2_reasons(PM2_LOG, 'watchy', [4], '/srv/watchy/current/testapp.js') == [
        'App [watchy:4] exited with code [0] via signal [SIGINT]',
        'Change detected on path marker.txt for app watchy - restarting (2 times)',
    ]
    assert pm2_reasons(PM2_LOG, 'crashy', [5], '/srv/crashy/current/testapp.js') == [
        'App [crashy:5] exited with code [1] via signal [SIGINT]',
        'Script /srv/crashy/current/testapp.js had too many unstable restarts (16). Stopped. "errored"',
    ]
    assert pm2_reasons(PM2_LOG, 'big', [6], None)[0].startswith('[PM2][WORKER] Process 6 restarted because it exceeds')
    assert pm2_reasons(PM2_LOG, 'watch', [9], None) == []  # a prefix of another app's name is not that app


def test_squeeze_keeps_the_last_distinct_lines_with_counts():
    assert squeeze(['a', 'b', 'a', 'c', 'a'], 2) == ['c', 'a (3 times)']


def test_instance_words():
    assert instance_word({'status': 'online', 'pid': 0}, 0) == 'online without a process (pid 0)'
    assert instance_word({'status': 'online', 'pid': 7}, 2) == 'crash-looping (online between restarts)'
    assert instance_word({'status': 'errored', 'pid': 0}, 2) == 'errored'
    assert instance_word({'status': None, 'pid': 0}, 0) == 'unknown'


def test_one_failure_keeps_the_old_top_level_keys():
    failure = describe('web', 'PM2', 'crashed', [{'label': 'pm_id 3', 'word': 'errored', 'restarts': 4}], ['why'],
                       {'stderr (/l/e.log)': ['boom'], 'stdout (/l/o.log)': []})
    err = failure_error([failure])
    assert str(err) == ('app web crashed: pm_id 3 errored; 4 restarts since the action\n  PM2: why\n'
                        '  stderr (/l/e.log):\n    boom\n  stdout (/l/o.log): (nothing written)')
    assert err.details == dict(app='web', status='pm_id 3 errored', restarts=4, log_tail=['boom'], failures=[failure])
    assert describe('x', 'systemd', 'not online', [], [], {})['status'] == 'no process'


def test_one_restart_is_singular():
    failure = describe('web', 'PM2', 'crashed', [{'label': 'pm_id 3', 'word': 'errored', 'restarts': 1}], [], {})
    assert str(failure_error([failure])) == 'app web crashed: pm_id 3 errored; 1 restart since the action'
