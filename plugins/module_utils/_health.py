# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Health checks of apps on the host they run on: an HTTP endpoint answering the expected status, or a command
exiting 0. A check is a dict: name, url (or port + path on 127.0.0.1), status, timeout; or name, command."""

from __future__ import annotations

import shlex
import time
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import open_url


def check_url(check: dict) -> str:
    if check.get('url'):
        return check['url']
    return 'http://127.0.0.1:%s%s' % (check['port'], check.get('path') or '/health')


def probe(module, check: dict) -> tuple[bool, str]:
    """(healthy, what was seen) for one check, once."""
    if check.get('command'):
        rc, out, err = module.run_command(shlex.split(check['command']))
        detail = (err or out).strip()[-300:]
        return rc == 0, 'command exited %s%s' % (rc, ': ' + detail if detail else '')
    url = check_url(check)
    want = int(check.get('status') or 200)
    try:
        response = open_url(url, method='GET', timeout=float(check.get('timeout') or 5), validate_certs=False,
                            follow_redirects='none')
        status = response.getcode()
        response.close()
    except HTTPError as exc:
        status = exc.code
    except (URLError, OSError, ValueError) as exc:
        return False, '%s: %s' % (url, getattr(exc, 'reason', exc))
    return status == want, '%s answered %s (want %s)' % (url, status, want)


def probe_all(module, checks: list[dict], attempts: int = 1, delay: float = 0.5) -> dict:
    """name -> {'healthy': bool, 'detail': str, 'attempts': n}; unhealthy checks are tried again up to attempts."""
    results = {}
    pending = list(checks)
    for attempt in range(1, attempts + 1):
        still = []
        for check in pending:
            healthy, detail = probe(module, check)
            results[check['name']] = {'healthy': healthy, 'detail': detail, 'attempts': attempt}
            if not healthy:
                still.append(check)
        pending = still
        if not pending:
            break
        if attempt < attempts:
            time.sleep(delay)
    return results
