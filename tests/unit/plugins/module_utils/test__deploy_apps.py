# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pm2_app seam as the deploy uses it: failures become per-app report lines; several health checks in turns."""

from __future__ import annotations

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils import _deploy_apps, _health
from ansible_collections.nodefleet.pm2.plugins.module_utils._common import Pm2Error

FAILURE = {'app': 'api', 'supervisor': 'pm2', 'why': 'crashed', 'status': '0 crash-looping', 'restarts': 4,
           'reason': ['App [api:0] exited with code [1]'], 'logs': {'out log': ['api: exiting'], 'error log': []}}


def test_failures_become_report_lines_per_app(monkeypatch, fake_module):
    def fail(module, params, check_mode):
        assert params['apps'] == [{'name': 'api'}] and params['save'] is True and params['user'] == 'app'
        raise Pm2Error('2 apps failed', app='api', failures=[FAILURE, dict(FAILURE, app='device', logs={})])
    monkeypatch.setattr(_deploy_apps, 'run_pm2_app', fail)
    with pytest.raises(_deploy_apps.AppsError) as err:
        _deploy_apps.apply_apps(fake_module(), {'user': 'app'}, [{'name': 'api'}], False)
    tails = err.value.details['log_tails']
    assert tails['api'] == ['crashed 0 crash-looping; 4 restarts since the action', 'pm2: App [api:0] exited with code [1]',
                            'out log:', '  api: exiting', 'error log: (nothing written)']
    assert tails['device'][0].startswith('crashed') and 'failures' not in err.value.details


def test_read_apps_failure(monkeypatch, fake_module):
    def fail(module, params):
        raise Pm2Error('no such OS user: x', field='user')
    monkeypatch.setattr(_deploy_apps, 'read_pm2_info', fail)
    with pytest.raises(_deploy_apps.AppsError) as err:
        _deploy_apps.read_apps(fake_module(), {'user': 'x'})
    assert err.value.details['field'] == 'user'


def test_probe_all_tries_in_turns_until_healthy(monkeypatch, fake_module):
    answers = {3000: [False, True], 3001: [False, False]}
    monkeypatch.setattr(_health, 'check_once', lambda module, h: (answers[h['port']].pop(0), 'HTTP 503'))
    checks = [{'name': 'api', 'port': 3000}, {'name': 'web', 'port': 3001, 'path': '/ping'}]
    results = _health.probe_all(fake_module(), checks, attempts=2, delay=0, sleep=lambda s: None)
    assert results['api'] == {'healthy': True, 'detail': 'GET http://127.0.0.1:3000/health: HTTP 503', 'attempts': 2}
    assert results['web'] == {'healthy': False, 'detail': 'GET http://127.0.0.1:3001/ping: HTTP 503', 'attempts': 2}
