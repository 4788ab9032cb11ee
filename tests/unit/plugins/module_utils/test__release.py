# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Release history, rollback choice, pruning and the layout on disk."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils._release import (
    ReleaseError,
    ReleaseLayout,
    format_record,
    name_items,
    outside,
    parse_history,
    process_dirs,
    recorded_apps,
    releases_to_prune,
    rollback_target,
    validate_release_id,
)


def history(*pairs, run='r1'):
    return parse_history('\n'.join(format_record(rel, outcome, run, [{'name': rel}], now=i) for i, (rel, outcome) in enumerate(pairs)))


def test_legacy_lines_read_as_healthy_activations():
    records = parse_history('aaa\nbbb\n{"release": "ccc", "outcome": "failed", "time": 1}\n{"torn": \n')
    assert [(r['release'], r['outcome']) for r in records] == [('aaa', 'activated'), ('bbb', 'activated'), ('ccc', 'failed')]


def test_rollback_after_an_auto_rollback_skips_the_failed_release():
    # good A, good B, A again, broken C (failed) put back to A: previous healthy = B, never C.
    h = history(('A', 'activated'), ('B', 'activated'), ('A', 'activated'), ('C', 'failed'), ('A', 'restored'))
    target, why = rollback_target(h, 'A', ['A', 'B', 'C'])
    assert target == 'B'
    assert 'C (failed)' in why


def test_rolled_back_release_is_not_a_rollback_target():
    # healthy on this host, undone because its batch failed elsewhere: same answer as the host that failed.
    h = history(('A', 'activated'), ('B', 'activated'), ('C', 'activated'), ('C', 'rolled_back'), ('B', 'restored'))
    assert rollback_target(h, 'B', ['A', 'B', 'C'])[0] == 'A'


def test_newest_record_of_a_release_decides():
    h = history(('A', 'activated'), ('C', 'failed'), ('B', 'activated'), ('C', 'activated'), ('B', 'activated'))
    assert rollback_target(h, 'B', ['A', 'B', 'C'])[0] == 'C'


def test_release_not_on_disk_is_skipped_and_said():
    h = history(('A', 'activated'), ('B', 'activated'), ('C', 'activated'))
    target, why = rollback_target(h, 'C', ['A', 'C'])
    assert target == 'A' and 'B (no longer on disk)' in why


def test_no_target_says_why():
    target, why = rollback_target(history(('A', 'activated')), 'A', ['A'])
    assert target == '' and 'no release was healthy' in why


def test_recorded_apps_are_those_of_the_newest_healthy_activation():
    h = parse_history('\n'.join([format_record('A', 'activated', 'r1', [{'name': 'old'}]),
                                 format_record('A', 'activated', 'r2', [{'name': 'new'}]),
                                 format_record('A', 'failed', 'r3', [{'name': 'broken'}])]))
    assert recorded_apps(h, 'A') == [{'name': 'new'}]
    assert recorded_apps(h, 'X') is None


def test_prune_keeps_current_rollback_target_and_unactivated_releases():
    h = history(('A', 'activated'), ('B', 'activated'), ('C', 'activated'), ('D', 'failed'), ('C', 'restored'))
    doomed = releases_to_prune(['A', 'B', 'C', 'D', 'E'], h, 'C', keep=2)
    # keep: the newest 2 healthy (C, B), current C, rollback target B, E (shipped, never activated); D failed
    assert doomed == ['A', 'D']


def test_prune_never_trades_the_last_good_release_for_failed_ones():
    # v1 good, v2 good, three bad releases rolled back to v2, a fourth just activated (its soak still to come).
    h = history(('v1', 'activated'), ('v2', 'activated'), ('b1', 'failed'), ('v2', 'restored'), ('b2', 'failed'),
                ('v2', 'restored'), ('b3', 'activated'))
    doomed = releases_to_prune(['v1', 'v2', 'b1', 'b2', 'b3'], h, 'b3', keep=3)
    assert doomed == ['b1', 'b2']  # b3 (current), v2 (rollback target) and v1 stay for the rollback after b3 fails


@pytest.mark.parametrize('bad', ['', '.hidden', 'a/b', '..', 'x' * 129, 'a b'])
def test_bad_release_ids_are_refused(bad):
    with pytest.raises(ReleaseError) as err:
        validate_release_id(bad)
    assert err.value.details['field'] == 'release'


def test_layout_switch_history_and_leftovers(tmp_path):
    layout = ReleaseLayout(str(tmp_path))
    for name in ('r1', 'r2', '.r3.partial'):
        os.makedirs(tmp_path / 'releases' / name)
    assert layout.current() == '' and layout.on_disk() == ['r1', 'r2'] and layout.leftovers() == ['.r3.partial']
    layout.switch('r1')
    layout.switch('r2')
    assert os.readlink(tmp_path / 'current') == 'releases/r2' and layout.current() == 'r2'
    layout.record(format_record('r2', 'activated', 'x', []))
    assert layout.history()[0]['release'] == 'r2'
    assert oct(os.stat(layout.history_path).st_mode & 0o777) == '0o600'
    layout.unset()
    assert layout.current() == ''


def test_history_is_trimmed(tmp_path):
    layout = ReleaseLayout(str(tmp_path))
    for i in range(250):
        layout.record(format_record('r%d' % i, 'activated'))
    records = layout.history()
    assert len(records) <= 200 and records[-1]['release'] == 'r249'
    assert json.loads(open(layout.history_path).read().splitlines()[-1])['release'] == 'r249'


def test_relative_path_is_refused():
    with pytest.raises(ReleaseError):
        ReleaseLayout('srv/app')


def test_processes_outside_the_release_are_found_per_process():
    # An interrupted reload: worker 0 runs B, worker 1 still runs A (PM2's record names B for the whole app).
    apps = {'api': {'instances': [{'pid': 10}, {'pid': 11}]}, 'web': {'instances': [{'pid': 12}, {'pid': 0}]},
            'gone': {'instances': [{'pid': 13}]}}
    cwd = {10: '/srv/s/releases/B', 11: '/srv/s/releases/A', 12: '/srv/s/releases/B', 13: ''}.get
    dirs = process_dirs(apps, ['api', 'web', 'gone', 'absent'], cwd)
    assert dirs == {'api': ['/srv/s/releases/A', '/srv/s/releases/B'], 'web': ['/srv/s/releases/B']}
    assert outside(dirs, '/srv/s/releases/B') == {'api': ['/srv/s/releases/A', '/srv/s/releases/B']}
    assert outside(dirs, '/srv/s/releases/A') == dirs


def test_release_of_dir(tmp_path):
    layout = ReleaseLayout(str(tmp_path))
    assert layout.release_of_dir(os.path.join(os.path.realpath(str(tmp_path)), 'releases', 'B')) == 'B'
    assert layout.release_of_dir('/opt/elsewhere') == '/opt/elsewhere'


def test_item_indexes_become_app_names():
    apps = [{'name': 'api'}, {'name': 'worker'}]
    assert name_items('apps[1].env_file: /x does not exist', apps) == 'apps[worker].env_file: /x does not exist'
    assert name_items('apps[7].env: bad; pm2_apps[0]', apps) == 'apps[7].env: bad; pm2_apps[0]'
