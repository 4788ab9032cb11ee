# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Run-wide deploy settings, the release id of a local source, and the decision after every host was read:
which hosts get the release shipped, which are rolled, which are left alone, and what refuses the run."""

from __future__ import annotations

import hashlib
import os

from ansible_collections.nodefleet.pm2.plugins.plugin_utils._deploy_inputs import (
    HOOK_STEPS,
    RELEASE_RE,
    SHA256_RE,
    InputError,
    _int,
    _str,
    parse_serial,
    topology_violations,
)


def run_settings(v: dict, mode: str, inventory_hosts: set) -> dict:
    """Settings read once per run (from the first target host's variables)."""
    settings = {
        'mode': mode,
        'serial': parse_serial(v.get('pm2_deploy_serial')),
        'max_fail_percentage': _int(v.get('pm2_deploy_max_fail_percentage', 0), 'pm2_deploy_max_fail_percentage', 0, 100),
        'lb_host': _str(v.get('pm2_deploy_lb_host'), 'pm2_deploy_lb_host', allow_empty=True),
        'lb_socket': _str(v.get('pm2_deploy_lb_socket'), 'pm2_deploy_lb_socket'),
        'lb_drain_timeout': _int(v.get('pm2_deploy_lb_drain_timeout'), 'pm2_deploy_lb_drain_timeout', 1),
        'lb_grace': _int(v.get('pm2_deploy_lb_grace'), 'pm2_deploy_lb_grace', 0),
        'lock_dir': _str(v.get('pm2_deploy_lock_dir'), 'pm2_deploy_lock_dir'),
        'lock_ttl': _int(v.get('pm2_deploy_lock_ttl'), 'pm2_deploy_lock_ttl', 60),
        'canary_soak': _int(v.get('pm2_deploy_canary_soak', 0), 'pm2_deploy_canary_soak', 0, 3600),
        'report_dir': _str(v.get('pm2_deploy_report_dir'), 'pm2_deploy_report_dir'),
        'rollback_to': _str(v.get('pm2_deploy_rollback_to'), 'pm2_deploy_rollback_to', allow_empty=True),
    }
    if settings['lb_host'] and settings['lb_host'] not in inventory_hosts:
        raise InputError('pm2_deploy_lb_host: %r is not an inventory host' % settings['lb_host'])
    if settings['rollback_to'] and not RELEASE_RE.match(settings['rollback_to']):
        raise InputError('pm2_deploy_rollback_to: %r is not a release id' % settings['rollback_to'])
    if mode == 'deploy':
        settings['source'] = source_settings(v)
    return settings


def source_settings(v: dict) -> dict:
    """Exactly one source: a local tree, a git repository, or an artifact built elsewhere (path or URL + sha256)."""
    path = _str(v.get('pm2_deploy_source_path'), 'pm2_deploy_source_path', allow_empty=True)
    repo = _str(v.get('pm2_deploy_git_repo'), 'pm2_deploy_git_repo', allow_empty=True)
    artifact = _str(v.get('pm2_deploy_artifact'), 'pm2_deploy_artifact', allow_empty=True)
    given = [name for name, value in (('pm2_deploy_source_path', path), ('pm2_deploy_git_repo', repo),
                                      ('pm2_deploy_artifact', artifact)) if value]
    if len(given) != 1:
        raise InputError('set exactly one of pm2_deploy_source_path, pm2_deploy_git_repo and pm2_deploy_artifact (got %s)'
                         % (', '.join(given) or 'none'))
    release = _str(v.get('pm2_deploy_release'), 'pm2_deploy_release', allow_empty=True)
    if release and not RELEASE_RE.match(release):
        raise InputError('pm2_deploy_release: %r is not a release id (letters, digits, ".", "_", "-")' % release)
    source = {'release': release, 'build_host': _str(v.get('pm2_deploy_build_host'), 'pm2_deploy_build_host')}
    if path:
        source.update(kind='path', path=os.path.expanduser(path),
                      exclude=list(v.get('pm2_deploy_source_exclude') or []))
    elif repo:
        source.update(kind='git', repo=repo, version=_str(v.get('pm2_deploy_git_version') or 'HEAD', 'pm2_deploy_git_version'))
    else:
        sha = _str(v.get('pm2_deploy_artifact_sha256'), 'pm2_deploy_artifact_sha256', allow_empty=True)
        if not SHA256_RE.match(sha):
            raise InputError('pm2_deploy_artifact_sha256: the sha256 (64 hex digits) of pm2_deploy_artifact is required, got %r' % sha)
        url = artifact.startswith(('http://', 'https://'))
        source.update(kind='artifact', artifact=artifact if url else os.path.expanduser(artifact), url=url,
                      sha256=sha.lower(), release=release or sha.lower()[:12])
    return source


def hooks(v: dict) -> dict:
    """hook name -> task file ('' when unset). pm2_deploy_{before,after}_switch_* are older names of *_activate_*."""
    found = {}
    for when in ('before', 'after'):
        if v.get('pm2_deploy_%s_cleanup_tasks_file' % when):
            raise InputError('pm2_deploy_%s_cleanup_tasks_file: old releases are now removed by the activation itself; '
                             'use pm2_deploy_after_activate_tasks_file' % when)
    for step in HOOK_STEPS:
        for when in ('before', 'after'):
            name = 'pm2_deploy_%s_%s_tasks_file' % (when, step)
            value = v.get(name) or ''
            if step == 'activate' and not value:
                value = v.get('pm2_deploy_%s_switch_tasks_file' % when) or ''
            found['%s_%s' % (when, step)] = _str(value, name, allow_empty=True)
    return found


def tree_hash(root: str, exclude: list[str]) -> str:
    """The release id of a source tree: the first 12 hex digits of
    `find . ( -name X -o ... ) -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum`,
    computed in Python (same value as earlier versions of the collection, so a re-run deploys nothing)."""
    if not os.path.isdir(root):
        raise InputError('pm2_deploy_source_path: %s is not a directory on the controller' % root)
    excluded = set(exclude)
    paths = []
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in excluded]
        for name in files:
            full = os.path.join(top, name)
            if name not in excluded and os.path.isfile(full) and not os.path.islink(full):
                paths.append('./' + os.path.relpath(full, root))
    outer = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.encode('utf-8', 'surrogateescape')):
        inner = hashlib.sha256()
        with open(os.path.join(root, path), 'rb') as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b''):
                inner.update(chunk)
        shown = path
        prefix = ''
        if '\\' in path or '\n' in path:
            prefix, shown = '\\', path.replace('\\', '\\\\').replace('\n', '\\n')
        outer.update(('%s%s  %s\n' % (prefix, inner.hexdigest(), shown)).encode('utf-8', 'surrogateescape'))
    return outer.hexdigest()[:12]


def check_topology(inputs: dict, hosts: list[str]) -> None:
    fleet = sorted(set(n for h in hosts for n in inputs[h]['fleet_singletons']))
    violations = topology_violations(dict((h, inputs[h]['apps']) for h in hosts), hosts, fleet)
    if violations:
        raise InputError('topology guard refused the deploy, nothing was changed: ' + '; '.join(violations))


# --------------------------------------------------------------------------- the decision after the plan call

def _failure(result: dict) -> str:
    if result.get('unreachable'):
        return 'unreachable: %s' % (result.get('msg') or '').strip()
    return (result.get('msg') or 'failed without a message').strip()


def lock_owner_text(app: str, lock: dict, lock_dir: str, project: str) -> str:
    if lock.get('unreadable'):
        return '%s (unreadable lock file %s/%s.%s.lock)' % (app, lock_dir, project, app)
    return '%s locked by %s@%s pid %s since %s (%s/%s.%s.lock)' % (
        app, lock.get('user', '?'), lock.get('controller', '?'), lock.get('pid', '?'), lock.get('started', '?'),
        lock_dir, project, app)


def _dead_tokens(run: dict, hosts: list[str], results: dict, alive) -> set:
    """Tokens of locks this controller took in an ansible-playbook that no longer runs."""
    dead = set()
    for host in hosts:
        for lock in (results[host].get('locks') or {}).values():
            if lock.get('token') == run['token']:
                continue
            if lock.get('controller') == run['controller'] and lock.get('pid') and not alive(int(lock['pid'])):
                dead.add(lock.get('token'))
    return set(t for t in dead if t)


def _sort_locks(run: dict, result: dict, dead: set) -> tuple[dict, dict]:
    """(stale, held): the host's locks of other runs, split by whether their run is gone (or too old)."""
    stale, held = {}, {}
    for app, lock in (result.get('locks') or {}).items():
        if lock.get('token') == run['token']:
            continue
        expired = result.get('now', 0) - lock.get('time', 0) > run['lock_ttl']
        if lock.get('unreadable') or expired or lock.get('token') in dead:
            stale[app] = lock
        else:
            held[app] = lock
    return stale, held


def _half_done(result: dict, stale: dict) -> list[str]:
    """What an earlier, interrupted run left on the host (empty when nothing)."""
    half = []
    if stale:
        half.append('deploy locks left by a run that is gone (%s)' % ', '.join(sorted(stale)))
    if result.get('current_outcome') == 'failed':
        half.append('current points at %s, which failed' % result.get('current'))
    if result.get('leftovers'):
        half.append('half-unpacked releases %s' % ', '.join(result['leftovers']))
    if result.get('off_current'):
        half.append('processes not on current (%s): %s' % (result.get('current'), '; '.join(
            '%s runs %s' % (app, ', '.join(where)) for app, where in sorted(result['off_current'].items()))))
    return half


def _host_decision(run: dict, result: dict, host_in: dict, stale: dict, half: list[str]) -> dict:
    """One host's part of the decision: what it ships, whether it rolls, what it drains and puts back."""
    actions = {a['name']: a.get('action') or '+'.join(a.get('actions') or []) or 'none' for a in result.get('apps') or []}
    changed_apps = sorted(n for n, act in actions.items() if act != 'none')
    roll = bool(result.get('switched')) or bool(changed_apps) or bool(stale) or result.get('current_outcome') == 'failed'
    servers = [{'backend': s['backend'], 'server': s['server']} for s in host_in['lb_servers']]
    drain = [server for server, s in zip(servers, host_in['lb_servers']) if s['app'] in changed_apps]
    return {'from': result.get('previous', ''), 'to': result.get('release', ''), 'actions': actions,
            'changed_apps': changed_apps, 'ship': run['mode'] == 'deploy' and not result.get('present', True),
            'roll': roll,
            # A host an earlier run left half-done may still be drained: put all of it back.
            'drain': drain, 'enable': servers if half else drain,
            'rollback_reason': result.get('rollback_reason', '') if run['mode'] == 'rollback' else ''}


def _refuse(run: dict, hosts: list[str], decision: dict, problems: list[str]) -> None:
    """InputError when held locks, too little disk or disagreeing rollback targets stop the run."""
    if decision['held']:
        raise InputError('another deploy holds the lock, nothing was changed: %s. Locks expire after %s s; remove a lock file only if '
                         'that deploy is gone.' % (' | '.join('%s: %s' % (h, '; '.join(t)) for h, t in sorted(decision['held'].items())),
                                                   run['lock_ttl']))
    if problems:
        raise InputError('not enough disk, nothing was changed: ' + ' | '.join(problems))
    if run['mode'] == 'rollback' and not run.get('rollback_to'):
        targets = {h: decision['hosts'][h]['to'] for h in hosts}
        if len(set(targets.values())) > 1:
            raise InputError('the hosts do not agree on the release to roll back to (%s); name one with '
                             '-e pm2_deploy_rollback_to=<release id>' % ', '.join('%s -> %s' % (h, targets[h]) for h in hosts))


def decide(run: dict, hosts: list[str], results: dict, inputs: dict, alive) -> dict:
    """Which hosts ship, roll or stay, from each host's plan result (pm2_release in check mode).

    alive(pid) tells whether an ansible-playbook of this controller still runs with that pid. Raises InputError
    with every host's reason when the run must stop before any change."""
    problems = ['%s: %s' % (h, _failure(results.get(h) or {'msg': 'no result'})) for h in hosts
                if not results.get(h) or results[h].get('failed') or results[h].get('unreachable')]
    if problems:
        raise InputError('unreachable or failed hosts, nothing was changed: ' + ' | '.join(problems))
    dead = _dead_tokens(run, hosts, results, alive)
    decision = {'ship': [], 'roll': [], 'noop': [], 'half_done': {}, 'held': {}, 'dead_tokens': sorted(dead), 'hosts': {}}
    for host in hosts:
        result, host_in = results[host], inputs[host]
        stale, held = _sort_locks(run, result, dead)
        if held:
            decision['held'][host] = [lock_owner_text(a, l, run['lock_dir'], host_in['project']) for a, l in sorted(held.items())]
        half = _half_done(result, stale)
        if half:
            decision['half_done'][host] = '; '.join(half)
        one = decision['hosts'][host] = _host_decision(run, result, host_in, stale, half)
        if one['ship'] and result.get('free_mb') is not None and result['free_mb'] < host_in['min_free_mb']:
            problems.append('%s: %s MiB free for %s, pm2_deploy_min_free_mb is %s'
                            % (host, result['free_mb'], host_in['to'], host_in['min_free_mb']))
        (decision['roll'] if one['roll'] else decision['noop']).append(host)
        if one['ship']:
            decision['ship'].append(host)
    _refuse(run, hosts, decision, problems)
    decision['lock'] = sorted(set(decision['ship']) | set(decision['roll']), key=hosts.index)
    if run.get('check_mode'):
        # What a real run would do is reported; no later step runs anywhere.
        decision['would'] = {k: decision[k] for k in ('ship', 'roll', 'lock')}
        decision.update(ship=[], roll=[], lock=[])
    return decision
