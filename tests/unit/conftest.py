# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures shared by the unit tests: an app directory, the recorded fixtures and a fake AnsibleModule."""

from __future__ import annotations

import os

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), 'plugins', 'module_utils', 'fixtures')


class ModuleExit(Exception):
    """exit_json or fail_json of the fake module: the result is in .result."""

    def __init__(self, result, failed):
        super().__init__(result.get('msg', ''))
        self.result = result
        self.failed = failed


class FakeModule:
    """What the backend uses of AnsibleModule; run_command answers from ``outputs`` (a list of (rc, out, err)) or
    from ``handler(argv)``."""

    def __init__(self, params=None, check_mode=False, diff=False, outputs=None, bins=None, handler=None):
        self.params = params or {}
        self.check_mode = check_mode
        self._diff = diff
        self.calls = []
        self.warnings = []
        self.outputs = list(outputs or [])
        self.handler = handler
        self.bins = bins if bins is not None else {
            'pm2': '/opt/node/bin/pm2', 'env': '/usr/bin/env', 'runuser': '/usr/sbin/runuser', 'node': '/opt/node/bin/node',
            'systemctl': '/usr/bin/systemctl', 'journalctl': '/usr/bin/journalctl'}

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return self.bins.get(name)

    def run_command(self, args, cwd=None):
        self.calls.append(list(args))
        if self.handler:
            return self.handler(list(args))
        return self.outputs.pop(0) if self.outputs else (0, '[]', '')

    def warn(self, text):
        self.warnings.append(text)

    def exit_json(self, **result):
        raise ModuleExit(result, False)

    def fail_json(self, **result):
        raise ModuleExit(result, True)


@pytest.fixture
def fake_module():
    return FakeModule


@pytest.fixture
def module_exit():
    return ModuleExit


@pytest.fixture
def read_fixture():
    def read(name):
        with open(os.path.join(FIXTURES, name)) as handle:
            return handle.read()
    return read


@pytest.fixture
def app_dir(tmp_path):
    """A release directory with a script and an env file."""
    (tmp_path / 'server.js').write_text('//')
    (tmp_path / 'app.env').write_text('SECRET=1\n')
    return tmp_path


@pytest.fixture
def systemd_spec():
    """systemd_spec(app_dir, **options): the spec of a systemd app in app_dir, as pm2_app normalises, checks and
    resolves it."""
    from ansible_collections.nodefleet.pm2.plugins.module_utils._spec import normalise_app, resolve_app
    from ansible_collections.nodefleet.pm2.plugins.module_utils._systemd_unit import check_systemd_spec

    def make(app_dir, **options):
        params = dict(name='web', supervisor='systemd', script=str(app_dir / 'server.js'), cwd=str(app_dir))
        params.update(options)
        spec = normalise_app(params, 4)
        check_systemd_spec(spec, params)
        return resolve_app(spec)
    return make
