#!/usr/bin/python
# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pm2_app
short_description: Manage Node.js applications run by PM2 or systemd
version_added: 0.1.0
description:
  - Converges one application (O(name)) or several (O(apps)) in one PM2 daemon to the wanted state, with one C(pm2 jlist)
    per call and the least disruptive PM2 action that reaches it (see the action table in C(docs/modules/pm2_app.md)).
  - Applications are started from a generated ecosystem JSON file (mode V(0600), removed after use), so arguments and
    environment values never pass through a shell or the command line.
  - After an action the module watches the application until every instance is online with a process and stays online
    for O(settle_time); a crash-looping application fails the task even though PM2 reports success. Every application of
    the call is watched to its end, and the failure names each one that did not become ready (RV(failures)).
  - Secrets belong in O(env_file), which a small Node.js preload reads at every process start; they never enter PM2's
    process list, dump file or command lines. O(env) values are visible to anyone who can run C(pm2 jlist).
  - With O(apps[].supervisor=systemd) the same options drive a systemd template unit instead (see
    C(docs/modules/pm2_app.md), section systemd); one call may mix both supervisors, and changing the supervisor of an
    app moves it without ever running it under both.
author:
  - nodefleet.pm2 contributors (@nodefleet)
extends_documentation_fragment:
  - nodefleet.pm2._pm2
  - nodefleet.pm2._attributes
  - nodefleet.pm2._attributes.idempotent
attributes:
  check_mode:
    support: full
    details:
      - Only C(pm2 jlist) runs; the planned actions and reasons are returned as in a real run.
      - Where no PM2 daemon runs yet, check mode does not start one and plans as for an empty process list.
  diff_mode:
    support: full
    details:
      - Shows script, cwd, exec mode, namespace, instance count, release and the B(names) of env variables; never env values.
  idempotent:
    support: partial
    details:
      - V(restarted) and V(reloaded) always act. The other states change nothing when the application already matches.
options:
  apps:
    description:
      - Several applications to converge in one call, each with the same options as the single-application form.
      - Mutually exclusive with O(name). Each item needs its own O(apps[].name).
      - All items are validated and planned before the first PM2 action.
    type: list
    elements: dict
    suboptions: &app_options
      name:
        description:
          - Application name in PM2. Required (at top level unless O(apps) is used, and in every item of O(apps)).
          - Must match C(^[a-z0-9][a-z0-9.-]*$), must not be purely numeric, not V(all), at most 100 characters and not
            equal to a PM2 namespace, so PM2 can never read it as an id, an option or a group.
          - Must not contain C(.json), C(.yml), C(.yaml), C(.config.js), C(.config.cjs) or C(.config.mjs), nor end in C(.js),
            C(.cjs) or C(.mjs), because PM2 reads such an argument as an ecosystem file or a script (a file in the app user's
            home could be run or acted on). The error names the field.
        type: str
      state:
        description:
          - V(started) ensures the app runs with this configuration (starts, reloads, scales or recreates as needed).
          - V(present) is like V(started) but leaves an existing stopped app stopped (configuration changes are applied
            with delete, start and stop).
          - V(stopped) ensures the app does not run; an app that does not exist stays absent. It never starts an app,
            not even to apply a changed configuration, which is applied at the next V(started).
          - V(restarted) and V(reloaded) always restart or reload (and also converge the configuration).
          - V(absent) deletes the app.
        type: str
        default: started
        choices: [present, started, stopped, restarted, reloaded, absent]
      supervisor:
        description:
          - V(pm2) runs the app in the PM2 daemon of O(user).
          - V(systemd) runs it as the template unit C(nodefleet-<name>@.service), one instance C(@0) .. C(@N-1) per
            process with C(NODE_APP_INSTANCE) set to the instance id, as O(user) (never root), with C(EnvironmentFile=) for
            O(apps[].env_file), hardening options, and the restart policy mapped from the PM2 options (autorestart,
            restart_delay, max_restarts + min_uptime, max_memory_restart, kill_timeout). Needs root (C(become)).
          - With V(systemd), V(cluster) mode, watch, cron_restart, exp_backoff_restart_delay and namespace are refused;
            wait_ready, listen_timeout, log_date_format, merge_logs and time are ignored with a warning.
          - When the app runs under the other supervisor it is stopped and removed there first (action V(switch)).
          - Ignored by the name-only form, which acts on the app wherever it runs.
        type: str
        default: pm2
        choices: [pm2, systemd]
      script:
        description:
          - Script or command to run. Relative paths are taken relative to O(apps[].cwd).
          - Required to create an app. Without it, an existing app is acted on by name only (start, stop, restart, reload,
            delete) and no other app option may be set.
        type: str
      cwd:
        description:
          - Absolute working directory of the app.
        type: path
      args:
        description:
          - Arguments passed to the script. Passed through the ecosystem file, so values starting with V(-) are safe.
        type: list
        elements: str
      interpreter:
        description:
          - Interpreter for the script (PM2 C(interpreter)). Default is chosen by PM2 from the script's extension.
          - Only Node.js (V(node)) may be used with O(apps[].exec_mode=cluster) or O(apps[].env_file).
        type: str
      node_args:
        description:
          - Arguments for the Node.js runtime, for example V(--max-old-space-size=512).
        type: list
        elements: str
      instances:
        description:
          - Number of processes; a positive integer, V(max) for one per CPU, or a negative integer for all CPUs but that
            many (at least 1). Default 1.
          - At most 128, or the number of CPUs when that is more.
          - Changed with C(pm2 scale) without restarting the running processes.
        type: raw
      exec_mode:
        description:
          - V(fork) or V(cluster) (Node.js cluster, one port shared by all instances, zero-downtime reload).
        type: str
        default: fork
        choices: [fork, cluster]
      autorestart:
        description: Restart the app when it exits.
        type: bool
      watch:
        description: V(true) to restart on file changes in O(apps[].cwd), or a list of paths to watch.
        type: raw
      ignore_watch:
        description: Paths or globs not watched.
        type: list
        elements: str
      watch_delay:
        description: Delay in milliseconds between a file change and the restart.
        type: int
      max_memory_restart:
        description: Restart when memory exceeds this; bytes, or a size like V(500M), V(1G), V(300K).
        type: raw
      min_uptime:
        description:
          - Time the app must stay up to count as started; milliseconds or a duration like V(10s), V(500ms), V(1m).
        type: raw
      max_restarts:
        description: Unstable restarts (shorter than O(apps[].min_uptime)) before PM2 gives up and marks the app errored.
        type: int
      restart_delay:
        description: Milliseconds to wait before restarting a crashed app.
        type: int
      exp_backoff_restart_delay:
        description: Initial delay in milliseconds of exponential backoff restarts.
        type: int
      cron_restart:
        description: Cron pattern for periodic restarts.
        type: str
      kill_timeout:
        description: Milliseconds between SIGINT and SIGKILL when stopping.
        type: int
      wait_ready:
        description: Wait for the app to send C(process.send('ready')) instead of the C(listening) event.
        type: bool
      listen_timeout:
        description: Milliseconds PM2 waits for C(listening) or C(ready) before considering a reloaded instance up.
        type: int
      out_file:
        description: Standard output log file; relative to O(apps[].cwd) when relative.
        type: path
      error_file:
        description: Standard error log file; relative to O(apps[].cwd) when relative. Its tail is shown when an app fails.
        type: path
      log_file:
        description: Combined log file; relative to O(apps[].cwd) when relative.
        type: path
      log_date_format:
        description: Timestamp format for log lines, for example V(YYYY-MM-DD HH:mm:ss).
        type: str
      merge_logs:
        description: Write all instances of a cluster app to the same log files.
        type: bool
      time:
        description: Prefix log lines with a timestamp.
        type: bool
      namespace:
        description: PM2 namespace of the app. Must differ from every app name.
        type: str
      env:
        description:
          - Environment variables for the app. B(Not for secrets) - the values are stored in clear text in PM2's process list
            and dump file, readable by anyone who can run C(pm2 jlist) as O(user). Use O(apps[].env_file) for secrets.
          - Names must match C(^[A-Za-z_][A-Za-z0-9_]*$); the prefix C(NODEFLEET_) is reserved.
          - Changed or added variables are applied with a reload; a removed variable needs delete and start.
        type: dict
      env_file:
        description:
          - Path of an env file on the host (C(KEY=VALUE) lines, C(#) comments, optional single or double quotes) loaded into
            C(process.env) by a Node.js preload at every process start, overriding O(apps[].env).
          - Must be readable by O(user). Its content never enters PM2's records; a keyed digest of it does, so a change of the
            content triggers a reload, which also drops variables removed from the file.
        type: path
      release_path:
        description:
          - Path whose resolved real path identifies the deployed release, typically a C(current) symlink.
          - When its real path changes, the app is reloaded (the script path behind the symlink is the same).
          - Defaults to O(apps[].cwd), or the directory of O(apps[].script).
        type: path
      settle_time:
        description:
          - Milliseconds every instance must stay online, without restarting, after an action before the task succeeds.
          - Defaults to O(apps[].min_uptime) but at least 3000, because a crash 2 s after start still looks online in between restarts.
        type: int
      ready_timeout:
        description: Seconds to wait for the app to be online and settled after an action. Default 60.
        type: int
      health:
        description:
          - A health check the app must pass once every app of the call is ready, in the same module call - an HTTP request
            (O(apps[].health.url), or O(apps[].health.port) + O(apps[].health.path) on 127.0.0.1) answered with
            O(apps[].health.status), or a command that exits 0. The same fields and defaults as C(pm2_deploy_apps[].health).
          - Checked on every run outside check mode (also when nothing changed) for apps with state V(started),
            V(restarted) or V(reloaded); check mode never probes.
          - A failing check fails the task naming the app, with the check's last answer or error and the app's log tails
            (RV(failures)); a failed run does not C(pm2 save).
          - Not handed to PM2 or systemd; changing it changes nothing on the host.
        type: dict
        suboptions:
          url:
            description: URL to GET (C(http://) or C(https://)).
            type: str
          port:
            description: Port on 127.0.0.1 to GET O(apps[].health.path) from.
            type: int
          path:
            description: Path for O(apps[].health.port). Default V(/health).
            type: str
          status:
            description: HTTP status that means healthy. Default 200.
            type: int
          timeout:
            description: Seconds one request may take. Default 5.
            type: int
          retries:
            description: Further attempts after the first one fails. Default 15.
            type: int
          delay:
            description: Seconds between attempts. Default 1.
            type: int
          command:
            description:
              - Command that exits 0 when the app is healthy; split into words like a shell would, but run without a shell,
                as the user the module runs as.
            type: str

  <<: *app_options
  save:
    description:
      - Run C(pm2 save --force) once after any change, so that C(pm2 resurrect) at boot restores the new process list.
      - The dump files are set to mode V(0600) because PM2 stores O(env) values in them.
    type: bool
    default: true
notes:
  - Changes that PM2 cannot apply to running processes (script, cwd, exec mode, interpreter, arguments, logs, watch, removed
    O(env) variables, ...) are applied with C(pm2 delete) and C(pm2 start), which is a short outage for that app.
  - A fork-mode reload is a restart. Only a cluster app reloads without downtime, and only when it listens quickly or
    uses O(apps[].wait_ready) with a suitable O(apps[].listen_timeout).
  - PM2 commands name an app's processes by their PM2 ids (as read by C(pm2 jlist) in the same run) and never by a
    form PM2 could read as a file; C(pm2 reload) and C(pm2 scale) take the validated name.
  - Every instance is compared with the wanted release (C(NODEFLEET_RELEASE) of each process), so an app whose
    instances run different releases (an interrupted reload) is reloaded.
  - After each action the module records the restart count of the app's processes in C($PM2_HOME/nodefleet/restarts.json),
    so M(nodefleet.pm2.pm2_info) tells the restarts it caused (reloads) from crashes.

seealso:
  - module: nodefleet.pm2.pm2_info
"""

EXAMPLES = r"""
---
- name: Run an API in cluster mode from the current release, secrets from an env file
  nodefleet.pm2.pm2_app:
    name: api
    script: /srv/api/current/dist/main.js
    cwd: /srv/api/current
    exec_mode: cluster
    instances: max
    wait_ready: true
    listen_timeout: 10000
    max_memory_restart: 1G
    min_uptime: 10s
    env:
      NODE_ENV: production
      PORT: 3000
    env_file: /srv/api/shared/api.env
    user: deploy
  become: true

- name: Converge several apps with one pm2 jlist
  nodefleet.pm2.pm2_app:
    user: deploy
    apps:
      - name: web
        script: /srv/web/current/server.js
        cwd: /srv/web/current
      - name: worker
        script: /srv/worker/current/worker.js
        args: [--queue, default]
      - name: old-service
        state: absent
  become: true

- name: Run a fork-mode service under systemd with the same options
  nodefleet.pm2.pm2_app:
    name: point-tron
    supervisor: systemd
    script: /opt/point-tron/current/dist/index.js
    cwd: /opt/point-tron/current
    max_memory_restart: 512M
    restart_delay: 10000
    kill_timeout: 30000
    env:
      NODE_ENV: production
      PORT: 3000
    env_file: /etc/nodefleet/env/point-tron/point-tron.env
    user: point-tron
  become: true

- name: Deploy step in one call - converge, wait until ready, then check health
  nodefleet.pm2.pm2_app:
    user: deploy
    apps:
      - name: api
        script: /srv/api/current/dist/main.js
        cwd: /srv/api/current
        exec_mode: cluster
        instances: 2
        health: {port: 3000, path: /ready, retries: 10, delay: 2}
      - name: worker
        script: /srv/worker/current/worker.js
        health: {command: /srv/worker/current/bin/healthcheck --quick}
  become: true

- name: Restart an existing app by name (in the PM2 daemon of user deploy)

  nodefleet.pm2.pm2_app:
    name: worker
    state: restarted
    user: deploy
  become: true
"""

RETURN = r"""
apps:
  description: One entry per application, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Application name.
      type: str
      sample: api
    action:
      description: The actions joined with V(+), or V(none).
      type: str
      sample: reload+scale
    actions:
      description:
        - Planned (check mode) or performed actions, among V(start), V(stop), V(restart), V(reload), V(scale), V(recreate)
          (delete and start) and V(delete); for systemd apps also V(install) (write the unit and daemon-reload); V(switch)
          removes the app from the other supervisor first.
      type: list
      elements: str
      sample: [reload, scale]
    reasons:
      description:
        - Why; names of changed options (C(env.NAME) for an O(env) variable), V(release), V(env_file_content), V(instances),
          V(missing), V(status), V(unmanaged), V(supervisor), V(unit) or V(requested). Never values.
      type: list
      elements: str
      sample: [env.LOG_LEVEL, instances]
    state:
      description: The requested state.
      type: str
      sample: started
    supervisor:
      description: The supervisor that runs the application after the run.
      type: str
      sample: pm2
    status:
      description:
        - Status after the run (V(online), V(stopped), V(absent), ...), why it is not ready when the task fails
          (V(crashed), V(not online), ..., V(unhealthy) for a failed health check), or the current status in check mode.
      type: str
      sample: online
action:
  description: The action of the application in the single-application form.
  returned: when O(name) is used
  type: str
  sample: none
reasons:
  description: The reasons of the application in the single-application form.
  returned: when O(name) is used
  type: list
  elements: str
  sample: []
strays:
  description:
    - Processes of an app this run started, reloaded or restarted that PM2 no longer listed, stopped by the module
      (SIGINT, then SIGKILL after the app's C(kill_timeout)), by app name. PM2 has lost track of cluster workers
      (pm2 issues 6129, 5389); such a worker keeps taking its share of the app's connections with older code and
      could answer a health check for the new release.
    - A warning names them too.
  returned: when there were any
  type: dict
  sample: {"api": [4242]}
pm2_calls:
  description: Number of C(pm2) commands run. A run without change makes exactly one (C(pm2 jlist)).
  returned: always
  type: int
  sample: 1
systemctl_calls:
  description: Number of C(systemctl) commands run (none on a host without systemd apps).
  returned: always
  type: int
  sample: 0
field:
  description: The option at fault (V(name), V(instances), V(env_file), ...; V(options) for a wrong combination of options).
  returned: on failure, for bad input
  type: str
  sample: instances
app:
  description:
    - The app the failure is about. For bad input in O(apps), the app's name (or C(number N of apps) for an item without
      one). When apps did not become ready, the first of them (all are in RV(failures)).
  returned: on failure, when it is about one app
  type: str
  sample: web
status:
  description: The instances of RV(app) as the supervisor left them, for example V(pm_id 3 crash-looping (online between restarts)).
  returned: on failure, when an app did not become ready
  type: str
  sample: pm_id 3 errored, pm_id 4 online
restarts:
  description: Restarts of RV(app)'s instances since the action (systemd counts automatic restarts since the start it was asked for).
  returned: on failure, when an app did not become ready
  type: int
  sample: 4
log_tail:
  description: The last lines RV(app) wrote in this run (its stderr log, then its stdout log; or this run's journal lines).
  returned: on failure, when an app did not become ready
  type: list
  elements: str
  sample: ['Error: listen EADDRINUSE: address already in use :::3000']
failures:
  description:
    - Every app that did not become ready, in the order they failed; each one's block is in C(msg) too.
    - Each app's log lines are bounded (10 per stream, 300 characters per line), so one app never hides another.
  returned: on failure, when an app did not become ready
  type: list
  elements: dict
  contains:
    app:
      description: Application name.
      type: str
    supervisor:
      description: V(PM2) or V(systemd).
      type: str
    why:
      description: V(crashed), V(not online), V(restarted while settling), V(not ready within ready_timeout) or V(failed its health check).
      type: str
    status:
      description: Per instance, what it really is (PM2 shows a crash-looping process as online between two crashes).
      type: str
    restarts:
      description: Restarts since the action, all instances together.
      type: int
    reason:
      description:
        - The supervisor's own lines about the app since the action, repeats counted - for PM2 from C($PM2_HOME/pm2.log)
          (exit codes, C(Change detected on path ... restarting), memory limit, too many unstable restarts); for systemd
          its journal lines about the units.
        - "For a failed health check, first the check's last answer or error (for example
          C(GET http://127.0.0.1:3000/health: HTTP 503 'db down' after 16 attempts))."
      type: list
      elements: str
    logs:
      description:
        - Per log (C(stderr (path)), C(stdout (path)), or C(journal (stdout, stderr and systemd))), its last lines written
          in this run where the module knew the file before the action, else its last lines.
      type: dict
rc:
  description: Exit code of the C(pm2) or C(systemctl) command that failed.
  returned: on failure of a command
  type: int
  sample: 1
stdout:
  description: Its standard output (last 2000 characters).
  returned: on failure of a command
  type: str
stderr:
  description: Its standard error (last 2000 characters).
  returned: on failure of a command
  type: str
  sample: '[PM2][ERROR] Process or Namespace web not found'
"""


from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import exit_with
from ansible_collections.nodefleet.pm2.plugins.module_utils._options import pm2_app_argument_spec
from ansible_collections.nodefleet.pm2.plugins.module_utils._pm2_app import MUTUALLY_EXCLUSIVE, REQUIRED_ONE_OF, run_pm2_app


def main():
    module = AnsibleModule(
        argument_spec=pm2_app_argument_spec(),
        mutually_exclusive=MUTUALLY_EXCLUSIVE,
        required_one_of=REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    exit_with(module, lambda: run_pm2_app(module, module.params, module.check_mode))


if __name__ == '__main__':
    main()
