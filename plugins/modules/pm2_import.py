#!/usr/bin/python
# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: pm2_import
short_description: Turn a PM2 ecosystem file into inventory for this collection, secrets into ansible-vault
version_added: 0.1.0
description:
  - Reads a PM2 ecosystem file on the B(controller) and writes inventory for this collection into O(dest)
    (C(hosts.yml), C(group_vars/all/pm2_apps.yml), C(group_vars/<group>/pm2_apps.yml) and, when there are secrets,
    C(group_vars/<group>/pm2_secrets.yml) encrypted with ansible-vault).
  - C(group_vars/all/pm2_apps.yml) holds everything the roles need for the apps - C(pm2_deploy_user) (O(user)),
    C(pm2_runtime_users) so that C(nodefleet.pm2.pm2_runtime) creates that user and its PM2 daemon, C(pm2_deploy_apps),
    C(pm2_env_apps) and C(pm2_logrotate_apps) for C(nodefleet.pm2.pm2_logrotate).
  - C(pm2_deploy_apps) gets one item per app with the fields M(nodefleet.pm2.pm2_app) supports (script relative to the
    release, exec mode, instances, the rest under C(pm2)); C(pm2_env_apps) gets each app's environment for the
    C(nodefleet.pm2.pm2_env) role.
  - The base C(env) block goes to C(group_vars/all); each C(env_<name>) block becomes an inventory group C(<name>)
    whose C(pm2_env_apps) is that block merged over C(env), as C(pm2 start --env <name>) does.
  - Every env value that looks secret, by name (C(KEY), C(SECRET), C(TOKEN), C(PASSWORD), C(PRIVATE), C(CREDENTIAL), ...),
    by shape (a PEM block, a URL with a password) or by entropy (a long random-looking string), is moved into the
    encrypted file as C(vault_<app>_<key>) and referenced from C(pm2_env_apps[].secrets). Values are never printed.
  - C(pm2_logrotate_apps) names each app's log files where PM2 writes them on a host deployed by C(nodefleet.pm2.pm2_deploy)
    (relative paths under C(<pm2_deploy_to>/shared/logs), PM2's default ones under the user's C(PM2_HOME)); the
    C(log_file_max_size) and C(log_file_max_files) keys some files carry (PM2 ignores them) become its C(size) and C(rotate).
  - Keys the collection cannot map (C(env_file), unsupported PM2 options, ...) are listed in the result and in a comment
    at the top of C(group_vars/all/pm2_apps.yml), never dropped silently.
  - Bad input fails before anything is written, with an error that starts with the name of the option, or names the
    app (by name) and the key of the file; no error quotes a value of the file.
  - JavaScript files (CommonJS C(module.exports), ES modules with C(export default) as C(.mjs) or C(.js)) are evaluated
    by a child C(node) process (Node.js 20 or later) with a timeout, a minimal environment, its working directory in an
    empty temporary directory, network and child-process modules disabled, signals to other processes refused, and
    the permission model on (no file writes; reads only below the file's directory, also through symlinks). What the
    file prints while it loads is counted, not kept, and reported in RV(notes); output and result are capped at 4 MiB
    while they are read. The child hands back JSON only; this plugin writes the files. JSON and YAML files are parsed
    without Node.js.
  - Existing files are left alone when their content is the same (an encrypted file is compared after decryption),
    and refused when it differs unless O(force=true).
author:
  - nodefleet.pm2 contributors (@nodefleet)
extends_documentation_fragment:
  - nodefleet.pm2._attributes
  - nodefleet.pm2._attributes.idempotent
attributes:
  check_mode:
    support: full
    details:
      - Evaluates and plans, reports the files it would write, writes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A second run with the same input and vault password changes nothing.
options:
  src:
    description:
      - The ecosystem file on the controller (C(.js), C(.cjs), C(.mjs), C(.json), C(.yml), C(.yaml)). A relative path is
        relative to the current directory.
    type: path
    required: true
  dest:
    description:
      - Inventory directory to write to (created if missing). A relative path is relative to the current directory.
    type: path
    required: true
  vault_password_file:
    description:
      - File holding the ansible-vault password (or an executable printing it), as for C(ansible-vault --vault-password-file).
      - Required when the file has secret-looking values; the import fails, writing nothing, without it.
    type: path
  vault_id:
    description: Vault id label of the encrypted files.
    type: str
    default: default
  force:
    description: Overwrite output files whose content differs.
    type: bool
    default: false
  user:
    description:
      - The OS user that runs the apps, written as C(pm2_deploy_user), used by C(pm2_env_apps[].user) and
        C(pm2_logrotate_apps[].user), and listed in C(pm2_runtime_users) for C(nodefleet.pm2.pm2_runtime) to create.
      - A name C(pm2_runtime) can create (C(^[a-z_][a-z0-9_-]{0,31}$)); V(root) is refused.
    type: str
    default: app
  health:
    description:
      - Health check written for every app (C(pm2_deploy_apps[].health)), for example C(port=3000) and C(path=/ready).
      - "Default: an HTTP check of C(/health) on the app's C(PORT), or a C(command) check running C(true) for an app without C(PORT)."
    type: dict
  secret_names:
    description: Env names always treated as secrets, in addition to the detection.
    type: list
    elements: str
    default: []
  plain_names:
    description: Env names never treated as secrets (false positives of the detection).
    type: list
    elements: str
    default: []
  node_executable:
    description: The C(node) binary (Node.js 20 or later) used to evaluate JavaScript files.
    type: str
    default: node
  timeout:
    description: Seconds the evaluation of a JavaScript file may take (1 to 600).
    type: int
    default: 10
  environment:
    description:
      - Environment variables visible to the ecosystem file while it is evaluated (the evaluation otherwise sees only
        C(PATH), C(HOME) and C(LANG)), for files that read C(process.env).
      - C(NODE_*) variables other than C(NODE_ENV) are refused (they change how node runs the sandbox).
    type: dict
    default: {}
notes:
  - Runs entirely on the controller through an action plugin; the target host is not contacted. Run it against V(localhost).
  - Values of secrets never appear in the result, in error messages or in the plain files; only their names do.
  - The importer assumes the ecosystem file sits at the root of the project that M(nodefleet.pm2.pm2_deploy) ships, so a
    relative C(cwd) becomes a directory of the release and an absolute C(cwd) is replaced by the release (reported in
    RV(notes)).
seealso:
  - module: nodefleet.pm2.pm2_app
"""

EXAMPLES = r"""
---
- name: Import an ecosystem file into ./inventory, secrets into vault
  nodefleet.pm2.pm2_import:
    src: ecosystem.config.js
    dest: inventory
    vault_password_file: ~/.vault-pass.txt
  delegate_to: localhost
  run_once: true

# From the shell:
#   ansible localhost -m nodefleet.pm2.pm2_import \
#     -a 'src=ecosystem.config.js dest=inventory vault_password_file=~/.vault-pass.txt'
"""

RETURN = r"""
files:
  description: Every file of the import.
  returned: success
  type: list
  elements: str
written:
  description: The files written (or, in check mode, to be written).
  returned: success
  type: list
  elements: str
apps:
  description: App names as imported.
  returned: success
  type: list
  elements: str
  sample: [backend-dev, backend-prod]
groups:
  description: Groups written; V(all) holds the base env.
  returned: success
  type: list
  elements: str
  sample: [all, production]
renamed:
  description: Apps whose name had to change to be a safe PM2 name.
  returned: success
  type: list
  elements: dict
  sample: [{from: track_flow-prod, to: track-flow-prod}]
unmapped:
  description: Keys not imported, with the reason (and the value when it is short and does not look secret).
  returned: success
  type: list
  elements: dict
  sample: [{app: backend-prod, key: env_file, value: '".env"', reason: 'not a PM2 option (PM2 ignores it): ...'}]
secrets_moved:
  description: Secrets moved to the encrypted files, by name only.
  returned: success
  type: list
  elements: dict
  sample: [{app: backend-prod, key: ESIGN_PRIVATE_KEY, var: vault_backend_prod_esign_private_key, reason: name, groups: [all, production]}]
runtime_users:
  description: The users written to C(pm2_runtime_users) (O(user)).
  returned: success
  type: list
  elements: str
  sample: [app]
logrotate_apps:
  description: Apps written to C(pm2_logrotate_apps).
  returned: success
  type: list
  elements: str
  sample: [backend-dev, backend-prod]
notes:
  description:
    - Everything else the user should check (assumed health checks, rewritten paths, split args, log files).
    - Also what the evaluation saw - output the file printed while it loaded, paths outside its directory it tried to use.
  returned: success
  type: list
  elements: str
"""
