# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The thin modules end to end through AnsibleModule (argument spec, one call, exit or fail), on the fake host."""

from __future__ import annotations

import contextlib
import json
from unittest import mock

import pytest

from ansible.module_utils import basic

from ansible_collections.nodefleet.pm2.plugins.module_utils import _pm2_app
from ansible_collections.nodefleet.pm2.plugins.modules import pm2_app, pm2_info

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core before 2.19
    @contextlib.contextmanager
    def patch_module_args(args):
        with mock.patch.object(basic, '_ANSIBLE_ARGS', json.dumps({'ANSIBLE_MODULE_ARGS': args}).encode()):
            yield


@pytest.fixture
def run_module(host, monkeypatch, capsys):
    monkeypatch.setattr(_pm2_app, 'POLL_INTERVAL', 0.01)
    monkeypatch.setattr(basic.AnsibleModule, 'run_command', lambda self, args, cwd=None, **kw: host.handler(list(args)))
    bins = host.fake_module().bins
    monkeypatch.setattr(basic.AnsibleModule, 'get_bin_path', lambda self, name, required=False, opt_dirs=None: bins.get(name))

    def run(module, args):
        with patch_module_args(dict(args, pm2_home=host.pm2_home)), pytest.raises(SystemExit):
            module.main()
        return json.loads(capsys.readouterr().out)
    return run


def test_pm2_app_converges_and_reports(run_module, app_dir):
    app = {'name': 'web', 'script': str(app_dir / 'server.js'), 'cwd': str(app_dir), 'settle_time': 0}
    result = run_module(pm2_app, {'apps': [app]})
    assert result['changed'] is True and result['apps'][0]['action'] == 'start' and not result.get('failed')
    result = run_module(pm2_app, {'apps': [app], '_ansible_check_mode': True, '_ansible_diff': True})
    assert result['changed'] is False and result['diff']['before']['web']['instances'] == 1


def test_pm2_app_fails_naming_the_field(run_module):
    result = run_module(pm2_app, {'name': 'evil.json', 'state': 'absent'})
    assert result['failed'] is True and result['field'] == 'name' and result['changed'] is False
    result = run_module(pm2_app, {'name': 'web', 'apps': [{'name': 'web'}]})
    assert result['failed'] is True and 'mutually exclusive' in result['msg']


def test_pm2_info_reads_without_changing(run_module, host):
    host.pm2.add('web')
    result = run_module(pm2_info, {})
    assert result['changed'] is False and result['apps']['web']['instances_online'] == 1 and result['pm2_calls'] == 1
