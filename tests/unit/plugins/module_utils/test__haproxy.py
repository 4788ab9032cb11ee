# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Parsing HAProxy's `show stat`."""

from __future__ import annotations

import pytest

from ansible_collections.nodefleet.pm2.plugins.module_utils._haproxy import HAProxyError, base_status, parse_stat

STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight
api,FRONTEND,,,3,5,4096,10,0,0,0,0,0,,,,,OPEN,
api,node1,0,0,2,3,,7,0,0,,0,,0,0,0,0,UP,1
api,node2,0,0,0,1,,3,0,0,,0,,0,0,0,0,MAINT,1
api,node3,0,0,0,1,,3,0,0,,0,,0,0,0,0,DOWN 1/2,1
api,BACKEND,0,0,2,3,,10,0,0,0,0,,0,0,0,0,UP,2
"""


def test_servers_with_status_and_sessions():
    servers = parse_stat(STAT)
    assert servers == {('api', 'node1'): {'status': 'UP', 'sessions': 2},
                       ('api', 'node2'): {'status': 'MAINT', 'sessions': 0},
                       ('api', 'node3'): {'status': 'DOWN 1/2', 'sessions': 0}}
    assert base_status('DOWN 1/2') == 'DOWN' and base_status('no check') == 'no check'


def test_garbage_is_an_error():
    with pytest.raises(HAProxyError):
        parse_stat('Unknown command\n')
