#!/usr/bin/python
# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pm2_deploy_plan
short_description: The controller side of the nodefleet.pm2.pm2_deploy role (inputs, decisions, summary)
version_added: 0.1.0
description:
  - An action plugin that runs on the B(controller) only and never contacts a host. The role
    C(nodefleet.pm2.pm2_deploy) calls it at fixed points of a deploy, rollback or status; it is documented for readers
    of the role, not meant to be called from playbooks of your own.
  - O(step=host) checks one host's C(pm2_deploy_*) variables and resolves its apps (C(run_on), instance counts, the
    M(nodefleet.pm2.pm2_app) items, health checks, load balancer servers, lock names) into the fact
    C(_pm2_deploy_host). Every error names the variable, the app (by name) and the host.
  - O(step=run) checks the run-wide settings (serial, load balancer, locks, hooks, the source (path, git or artifact)
    and its sha256, the topology guards across O(hosts), computes the release id of a local source, and sets
    C(_pm2_deploy_run).
  - O(step=decide) reads each host's plan (the registered result of M(nodefleet.pm2.pm2_release) in check mode, named
    by O(results)) and sets C(_pm2_deploy_decision) - which hosts get the release shipped, which roll, which stay - or
    fails with every host's reason (unreachable hosts, held locks, disk).
  - O(step=summary) returns the run's table (failures first) and writes it as JSON in the report directory.
  - O(step=status) returns the fleet table from the M(nodefleet.pm2.pm2_release_info) results named by O(results).
author:
  - nodefleet.pm2 contributors (@nodefleet)
extends_documentation_fragment:
  - nodefleet.pm2._attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads only; in check mode the decision says what a real run would do and no later step acts.
  diff_mode:
    support: none
  action:
    support: full
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
options:
  step:
    description: Which step, see the description.
    type: str
    required: true
    choices: [host, run, decide, summary, status]
  mode:
    description: What the run does.
    type: str
    default: deploy
    choices: [deploy, rollback, status]
  hosts:
    description: The target hosts of the run (O(step=run), O(step=decide), O(step=status)).
    type: list
    elements: str
    default: []
  results:
    description: Name of the registered variable holding each host's plan or status read.
    type: str
    default: __pm2_deploy_plan
  status_json:
    description: O(step=status) writes the fleet as JSON to this controller path; V(-) or empty writes nothing.
    type: str
    default: ''
seealso:
  - module: nodefleet.pm2.pm2_release
  - module: nodefleet.pm2.pm2_release_info
"""

EXAMPLES = r"""
---
# From roles/pm2_deploy/tasks/plan.yml
- name: Check this host's inputs and resolve its apps
  nodefleet.pm2.pm2_deploy_plan:
    step: host
    mode: deploy
"""

RETURN = r"""
ansible_facts:
  description: C(_pm2_deploy_host) (O(step=host)), C(_pm2_deploy_run) (O(step=run)) or C(_pm2_deploy_decision) (O(step=decide)).
  returned: steps host, run and decide
  type: dict
lines:
  description: The table, one string per line.
  returned: steps summary and status
  type: list
  elements: str
summary:
  description: The run's report (hosts, batches, failure lines), as written to RV(report).
  returned: step summary
  type: dict
failure_message:
  description: One line per failed host and the hosts not reached; empty when every host is fine.
  returned: step summary
  type: str
report:
  description: Path of the JSON report on the controller.
  returned: step summary, outside check mode
  type: str
rows:
  description: One row per host and app.
  returned: step status
  type: list
  elements: dict
"""
