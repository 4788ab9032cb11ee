# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Deploy locks: all or nothing, stale and dead ones taken over, only our own given back."""

from __future__ import annotations

import json

from ansible_collections.nodefleet.pm2.plugins.module_utils._deploy_lock import lock_path, project_locks, release, take

OWNER = {'token': 'mine', 'controller': 'c1', 'user': 'u', 'pid': 1, 'started': 's'}


def plant(lock_dir, app, **lock):
    lock_dir.mkdir(exist_ok=True)
    (lock_dir / ('shop.%s.lock' % app)).write_text(json.dumps(lock))


def test_take_and_release(tmp_path):
    result = take(str(tmp_path), 'shop', ['api', 'web'], OWNER, 3600, now=1000)
    assert result == {'taken': ['api', 'web'], 'held': {}, 'stolen': {}}
    assert json.loads(open(lock_path(str(tmp_path), 'shop', 'api')).read())['time'] == 1000
    assert sorted(release(str(tmp_path), 'shop', 'mine')) == ['api', 'web']
    assert project_locks(str(tmp_path), 'shop') == {}


def test_a_live_lock_refuses_everything_even_for_an_app_not_asked(tmp_path):
    plant(tmp_path, 'removed-app', token='other', time=990)
    result = take(str(tmp_path), 'shop', ['api'], OWNER, 3600, now=1000)
    assert result['taken'] == [] and 'removed-app' in result['held']
    assert sorted(project_locks(str(tmp_path), 'shop')) == ['removed-app']


def test_stale_unreadable_and_dead_locks_are_taken_over(tmp_path):
    plant(tmp_path, 'api', token='old', time=0)
    plant(tmp_path, 'web', token='dead', time=999)
    (tmp_path / 'shop.junk.lock').write_text('{"half')
    result = take(str(tmp_path), 'shop', ['api', 'web'], OWNER, 60, dead_tokens={'dead'}, now=1000)
    assert result['taken'] == ['api', 'web']
    assert sorted(result['stolen']) == ['api', 'junk', 'web']
    assert sorted(project_locks(str(tmp_path), 'shop')) == ['api', 'web']


def test_release_leaves_other_runs_and_projects_alone(tmp_path):
    plant(tmp_path, 'api', token='other', time=1)
    (tmp_path / 'blog.api.lock').write_text(json.dumps({'token': 'mine'}))
    assert release(str(tmp_path), 'shop', 'mine') == []
    assert (tmp_path / 'blog.api.lock').exists() and (tmp_path / 'shop.api.lock').exists()
