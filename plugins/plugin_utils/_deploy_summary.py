# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The end of a deploy or rollback: one record per host (failures first) and per batch, as JSON and as a table."""

from __future__ import annotations

FAILED = ('failed', 'rolled_back', 'rollback_failed', 'stopped', 'unreachable')


def _short(release: str) -> str:
    return release or '-'


def host_record(host: str, run: dict, decision: dict, report) -> dict:
    planned = decision.get('hosts', {}).get(host, {})
    record = {'host': host, 'from': planned.get('from', ''), 'to': planned.get('to', ''), 'batch': None, 'seconds': None,
              'actions': dict((n, a) for n, a in planned.get('actions', {}).items()), 'half_done': decision.get('half_done', {}).get(host, '')}
    if planned.get('rollback_reason'):
        record['reason'] = planned['rollback_reason']
    if run.get('check_mode'):
        would = decision.get('would', {})
        record['outcome'] = 'would_roll' if host in would.get('roll', []) else 'unchanged'
        if host in would.get('ship', []):
            record['outcome'] = 'would_ship_and_roll'
        return record
    if host in decision.get('noop', []):
        record['outcome'] = 'unchanged'
        return record
    if not report:
        record['outcome'] = 'not_reached'
        return record
    record.update(dict((k, v) for k, v in report.items() if k != 'host'))
    record['seconds'] = report.get('work')
    if report.get('unreachable') and record.get('outcome') == 'failed':
        record['outcome'] = 'unreachable'  # nothing could be put back there
    return record


AFTER = {
    'failed': 'left as it is',
    'rolled_back': 'put back on {restored}',
    'stopped': 'nothing ran there before: its apps were stopped and current removed, nothing was rolled back',
    'rollback_failed': 'could NOT be put back (still drained at the load balancer): {restore_error}',
    'unreachable': 'unreachable, left drained; the next run converges it',
}


def failure_line(r: dict) -> str:
    what = AFTER[r['outcome']].format(restored=r.get('restored') or r.get('from') or '-', restore_error=r.get('restore_error', ''))
    if r.get('failed_step'):
        return '%s: failed at %s: %s -> %s' % (r['host'], r['failed_step'], r.get('error', ''), what)
    return '%s: %s -> %s' % (r['host'], r.get('reason') or 'another host of its batch failed', what)


def summary_report(run: dict, decision: dict, reports: dict, batches: list) -> dict:
    records = [host_record(h, run, decision, reports.get(h)) for h in run['hosts']]
    records.sort(key=lambda r: (r['outcome'] not in FAILED, r['outcome'] == 'unchanged', run['hosts'].index(r['host'])))
    failure_lines = [failure_line(r) for r in records if r['outcome'] in FAILED]
    not_reached = [r['host'] for r in records if r['outcome'] == 'not_reached']
    if failure_lines and not_reached:
        failure_lines.append('not reached (kept their release): %s' % ', '.join(not_reached))
    return {'mode': run['mode'], 'release': (run.get('source') or {}).get('release', ''), 'started': run['started'],
            'check_mode': run.get('check_mode', False), 'hosts': records, 'batches': batches,
            'failure_lines': failure_lines}


def _apps_text(actions: dict) -> str:
    changed = ['%s: %s' % (n, a) for n, a in sorted(actions.items()) if a not in ('none', '')]
    same = len(actions) - len(changed)
    parts = changed + (['%d unchanged' % same] if same and changed else ['all unchanged'] if same else [])
    return ', '.join(parts) or '-'


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ['  '.join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _host_notes(r: dict) -> list[str]:
    """The lines under the table for one host: what was found, why, what failed, what was put back, log tails."""
    notes = []
    for key, text in (('half_done', 'found half-done: %s'), ('reason', 'why this release: %s'),
                      ('restored', 'put back: %s'), ('restore_error', 'could not be put back (still drained at the LB): %s')):
        if r.get(key):
            notes.append(text % r[key])
        if key == 'reason' and r.get('failed_step'):
            notes.append('failed step: %s: %s' % (r['failed_step'], r.get('error', '')))
    lines = ['  %s: %s' % (r['host'], n) for n in notes]
    for app, tail in sorted((r.get('log_tail') or {}).items()):
        lines.append('  %s: log tail of %s:' % (r['host'], app))
        lines.extend('    ' + line for line in tail)
    return lines


def _batch_line(b: dict) -> str:
    share = ''
    if b.get('work') is not None:
        overhead = round(100 * (b['wall'] - b['work']) / b['wall']) if b['wall'] else 0
        share = ', real work %.1f s, overhead %d%%' % (b['work'], overhead)
    return 'batch %s (%s): %.1f s%s' % (b['number'], ', '.join(b['hosts']), b['wall'], share)


def summary_lines(report: dict) -> list[str]:
    hosts = report['hosts']
    counts = {}
    for r in hosts:
        counts[r['outcome']] = counts.get(r['outcome'], 0) + 1
    checking = ' (check mode: nothing was changed)' if report['check_mode'] else ''
    release = ' of release %s' % report['release'] if report['release'] else ''
    outcomes = ', '.join('%d %s' % (n, o.replace('_', ' ')) for o, n in sorted(counts.items()))
    rows = [['host', 'from -> to', 'outcome', 'batch', 'seconds', 'apps']]
    for r in hosts:
        rows.append([r['host'], '%s -> %s' % (_short(r['from']), _short(r['to'])), r['outcome'].replace('_', ' '),
                     str(r['batch'] or '-'), '%.1f' % r['seconds'] if r['seconds'] is not None else '-', _apps_text(r['actions'])])
    lines = ['pm2_deploy %s%s%s: %s' % (report['mode'], checking, release, outcomes)] + _table(rows)
    for r in hosts:
        lines.extend(_host_notes(r))
    return lines + [_batch_line(b) for b in report['batches']]
