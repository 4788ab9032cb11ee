# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The end-of-run summary and the status table."""

from __future__ import annotations

from ansible_collections.nodefleet.pm2.plugins.plugin_utils._deploy_status import status_rows, status_table
from ansible_collections.nodefleet.pm2.plugins.plugin_utils._deploy_summary import summary_lines, summary_report

RUN = {'mode': 'deploy', 'hosts': ['h1', 'h2', 'h3', 'h4'], 'started': '2026-12-03T08:00:00Z', 'source': {'release': 'B'}}
DECISION = {'roll': ['h1', 'h2', 'h3'], 'noop': ['h4'], 'half_done': {'h2': 'deploy locks left by a run that is gone (api)'},
            'hosts': dict((h, {'from': 'A', 'to': 'B', 'actions': {'api': 'reload', 'web': 'none'}}) for h in ['h1', 'h2', 'h3', 'h4'])}
REPORTS = {
    'h1': {'outcome': 'deployed', 'batch': 1, 'work': 4.2, 'actions': {'api': 'reload', 'web': 'none'}},
    'h2': {'outcome': 'rolled_back', 'batch': 2, 'work': 9.0, 'failed_step': 'Activate the release',
           'error': 'app api crashed', 'restored': 'A', 'log_tail': {'api': ['Error: boom', 'at main']}},
}
BATCHES = [{'number': 1, 'hosts': ['h1'], 'wall': 6.0, 'work': 4.2}, {'number': 2, 'hosts': ['h2'], 'wall': 12.0, 'work': 9.0}]


def test_failures_first_with_step_reason_and_tails():
    report = summary_report(RUN, DECISION, REPORTS, BATCHES)
    assert [r['host'] for r in report['hosts']] == ['h2', 'h1', 'h3', 'h4']
    assert [r['outcome'] for r in report['hosts']] == ['rolled_back', 'deployed', 'not_reached', 'unchanged']
    assert report['failure_lines'] == ['h2: failed at Activate the release: app api crashed -> put back on A',
                                       'not reached (kept their release): h3']
    lines = summary_lines(report)
    assert lines[0] == 'pm2_deploy deploy of release B: 1 deployed, 1 not reached, 1 rolled back, 1 unchanged'
    assert lines[1].split() == ['host', 'from', '->', 'to', 'outcome', 'batch', 'seconds', 'apps']
    assert 'h2 A -> B rolled back 2 9.0 api: reload, 1 unchanged'.split() in [line.split() for line in lines]
    assert '  h2: found half-done: deploy locks left by a run that is gone (api)' in lines
    assert '    Error: boom' in lines
    assert 'batch 2 (h2): 12.0 s, real work 9.0 s, overhead 25%' in lines


def test_check_mode_says_what_would_happen():
    run = dict(RUN, check_mode=True)
    decision = dict(DECISION, roll=[], would={'ship': ['h1'], 'roll': ['h1', 'h2'], 'lock': ['h1', 'h2']})
    report = summary_report(run, decision, {}, [])
    outcomes = dict((r['host'], r['outcome']) for r in report['hosts'])
    assert outcomes == {'h1': 'would_ship_and_roll', 'h2': 'would_roll', 'h3': 'unchanged', 'h4': 'unchanged'}
    assert summary_lines(report)[0].startswith('pm2_deploy deploy (check mode: nothing was changed) of release B')


INPUTS = {'apps': [{'name': 'api', 'instances': 2}, {'name': 'web', 'instances': 1}],
          'items': [{'name': 'api'}, {'name': 'web'}, {'name': 'gone', 'state': 'absent'}]}


def proc(status='online', restarts=0, crash=0, memory=1048576):
    return {'status': status, 'restarts': restarts, 'crash_restarts': crash, 'memory': memory}


def test_status_rows_mismatch_and_crash_restarts():
    info = {'current': 'B', 'locks': {}, 'apps': {
        'api': {'supervisor': 'pm2', 'instances_online': 2, 'instances': [proc(restarts=4), proc(restarts=4, crash=1)],
                'release': '/srv/shop/releases/B'},
        'gone': {'supervisor': 'pm2', 'instances_online': 1, 'instances': [proc()], 'release': '/srv/shop/releases/A'}}}
    rows = status_rows('h1', INPUTS, info)
    assert [(r['app'], r['online'], r['desired'], r['status'], r['restarts'], r['crash_restarts'], r['release'], r['mismatch'])
            for r in rows] == [('api', 2, 2, 'online', 8, 1, 'B', False), ('web', 0, 1, 'absent', 0, 0, '-', False),
                               ('gone', 1, 0, 'online', 0, 0, 'A', True)]
    lines = status_table(rows)
    assert lines[0].split() == ['host', 'app', 'supervisor', 'online/desired', 'status', 'memory_mb', 'restarts', 'crash_restarts',
                                'release', 'current']
    assert lines[-1] == 'not running the release current points to: h1/gone (a deploy reloads them)'


def test_a_host_that_went_away_is_reported_unreachable():
    reports = {'h1': {'outcome': 'failed', 'batch': 1, 'work': 1.0, 'failed_step': 'Activate the release', 'unreachable': True,
                      'error': 'h1 became unreachable'}}
    report = summary_report(dict(RUN, hosts=['h1', 'h2']), dict(DECISION, roll=['h1', 'h2'], noop=[]), reports, [])
    assert [r['outcome'] for r in report['hosts']] == ['unreachable', 'not_reached']
    assert report['failure_lines'] == ['h1: failed at Activate the release: h1 became unreachable -> unreachable, left drained; '
                                       'the next run converges it', 'not reached (kept their release): h2']


def test_status_shows_workers_split_across_releases():
    info = {'current': 'B', 'locks': {}, 'apps': {
        'api': {'supervisor': 'pm2', 'instances_online': 2, 'instances': [proc(), proc()], 'release': '/srv/shop/releases/B',
                'running_releases': ['A', 'B']},
        'web': {'supervisor': 'pm2', 'instances_online': 1, 'instances': [proc()], 'release': '/srv/shop/releases/B',
                'running_releases': ['B']}}}
    rows = status_rows('h1', INPUTS, info)
    assert [(r['app'], r['release'], r['mismatch']) for r in rows] == [('api', 'A,B', True), ('web', 'B', False)]
    assert status_table(rows)[-1] == 'not running the release current points to: h1/api (a deploy reloads them)'
