# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Pack the stand-in project of every seed: one tarball per seed for the deployed host, one for the reference host.

    projects.py OUT_DIR FIXTURES_DIR STANDIN_JS SEEDS_JSON

deployed-<project>.tar.gz: the layout of nodefleet.pm2.pm2_deploy - srv/<project>/releases/standin/<tree>,
srv/<project>/current -> releases/standin, and srv/<project>/shared/<dir> for the tree's top-level directories that
pm2_deploy shares (logs, uploads, data), linked from the release as ../../shared/<dir>. deploy-imported.yml unpacks it
as the deploy's ship step, after pm2_runtime has created the seed's user from the imported inventory.
reference.tar.gz (prepare.yml): the same for every seed, or <reference>/<tree> for a seed with `reference`. The tree
is the same on both: the original ecosystem file, its copy to start (start_as), the stand-in at every script path,
package.json files, directories and empty files (vars/seeds.yml). Everything in a tree belongs to the seed's user.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tarfile

MTIME = 1700000000


def tree(seed, fixtures, standin):
    """{relative path: bytes or None for a directory} of one seed's stand-in project."""
    with open(seed.get('src') or os.path.join(fixtures, seed['file']), 'rb') as handle:
        original = handle.read()
    files = {seed['file']: original}
    if seed.get('start_as'):
        copy = original
        if seed['file'].endswith('.mjs'):
            copy = re.sub(rb'(?m)^export default ', b'module.exports = ', original)
        files[seed['start_as']] = copy
    with open(standin, 'rb') as handle:
        code = handle.read()
    for script in seed['scripts']:
        files[script] = code
    for path in seed.get('files', []):
        files[path] = b''
    for directory, package in seed.get('packages', {}).items():
        files[os.path.join(directory, 'package.json')] = (json.dumps(package, indent=2) + '\n').encode()
    entries = {}
    for path, data in files.items():
        parts = path.split('/')
        for i in range(1, len(parts)):
            entries.setdefault('/'.join(parts[:i]), None)
        entries[path] = data
    for directory in seed.get('dirs', []):
        entries.setdefault(directory, None)
    return entries


def add(tar, name, data=None, owner='root', link=None):
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.uname = info.gname = owner
    if link is not None:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tar.addfile(info)
    elif data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))


# pm2_deploy_shared_dirs' default: these top-level directories of a release are links to <deploy_to>/shared/<dir>.
SHARED_DIRS = ('logs', 'uploads', 'data')


def release(tar, project, user, entries):
    base = 'srv/%s' % project
    add(tar, base)
    add(tar, base + '/releases')
    add(tar, base + '/releases/standin', owner=user)
    add(tar, base + '/current', link='releases/standin')
    shared = sorted(d for d in SHARED_DIRS if d in entries)
    if shared:
        add(tar, base + '/shared', owner=user)
    for path in sorted(entries):
        top = path.split('/')[0]
        if top in shared:
            add(tar, '%s/shared/%s' % (base, path), entries[path], owner=user)
            if path == top:
                add(tar, '%s/releases/standin/%s' % (base, path), owner=user, link='../../shared/' + top)
        else:
            add(tar, '%s/releases/standin/%s' % (base, path), entries[path], owner=user)


def main(out, fixtures, standin, seeds):
    with tarfile.open(os.path.join(out, 'reference.tar.gz'), 'w:gz') as reference:
        for seed in seeds:
            entries = tree(seed, fixtures, standin)
            user = seed['user']
            with tarfile.open(os.path.join(out, 'deployed-%s.tar.gz' % seed['project']), 'w:gz') as deployed:
                release(deployed, seed['project'], user, entries)
            if not seed.get('reference'):
                release(reference, seed['project'], user, entries)
                continue
            root = seed['reference'].strip('/')
            parts = root.split('/')
            for i in range(1, len(parts)):
                add(reference, '/'.join(parts[:i]))
            add(reference, root, owner=user)
            for path in sorted(entries):
                add(reference, '%s/%s' % (root, path), entries[path], owner=user)


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
