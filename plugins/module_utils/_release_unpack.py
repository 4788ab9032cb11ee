# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_release state=present: a release artifact unpacked into releases/.<id>.partial, its shared directories and
links made, then renamed to releases/<id>, so a release on disk is complete or absent."""

from __future__ import annotations

import grp
import os
import pwd
import shutil

from ansible_collections.nodefleet.pm2.plugins.module_utils._release import ReleaseError, ReleaseLayout


def free_mb(path: str):
    """MiB free where path is (or would be created)."""
    while not os.path.exists(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize // (1024 * 1024)


def owner_ids(owner: str, group: str) -> tuple[int, int]:
    try:
        account = pwd.getpwnam(owner)
    except KeyError:
        raise ReleaseError('owner: no such OS user: %s' % owner, field='owner')
    gid = account.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ReleaseError('group: no such group: %s' % group, field='group')
    return account.pw_uid, gid


def _untar(module, src: str, dest: str, uid: int, gid: int) -> None:
    # GNU tar refuses members that climb out of dest ('..', absolute paths are made relative).
    tar = module.get_bin_path('tar', required=True)
    rc, out, err = module.run_command([tar, '-xzf', src, '-C', dest, '--no-same-owner', '--no-same-permissions'])
    if rc != 0:
        raise ReleaseError('src: unpacking %s failed: %s' % (src, (err or out).strip()[-500:]), field='src')
    for root, dirs, files in os.walk(dest):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)
    os.lchown(dest, uid, gid)


def replace_with_link(release_dir: str, name: str, target: str) -> None:
    """release_dir/name becomes a symlink to target (a shared directory or file), whatever the artifact had there."""
    path = os.path.join(release_dir, name)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, 0o755)
    if not os.path.isabs(target) and os.sep in name:
        # shared/<name> seen from a nested path: climb as many levels as the path is deep.
        target = os.path.join(*(['..'] * name.count(os.sep) + [target]))
    os.symlink(target, path)


def _make_dirs(layout: ReleaseLayout, shared_dirs: list, uid: int, gid: int) -> None:
    for path in (layout.path, layout.releases_dir, layout.shared_dir):
        if not os.path.isdir(path):
            os.makedirs(path, 0o755)
    for name in shared_dirs:
        shared = os.path.join(layout.shared_dir, name)
        if not os.path.isdir(shared):
            os.makedirs(shared, 0o750)
            os.chown(shared, uid, gid)


def unpack_release(module, layout: ReleaseLayout, release: str) -> None:
    """Check the artifact (params src, checksum) and unpack it as releases/<release>; nothing half-done is left."""
    params = module.params
    src, checksum = params['src'], params['checksum']
    if not src:
        raise ReleaseError('src: release %s is not on the host and no artifact was given' % release, field='src')
    if checksum:
        got = module.digest_from_file(src, 'sha256')
        if got != checksum.lower():
            raise ReleaseError('checksum: the artifact on the host has sha256 %s, expected %s' % (got, checksum),
                               field='checksum')
    uid, gid = owner_ids(params['owner'], params['group'])
    _make_dirs(layout, params['shared_dirs'], uid, gid)
    partial = os.path.join(layout.releases_dir, '.%s.partial' % release)
    if os.path.lexists(partial):
        shutil.rmtree(partial)
    os.makedirs(partial, 0o755)
    try:
        _untar(module, src, partial, uid, gid)
        for name in params['shared_dirs'] + sorted(params['shared_links']):
            replace_with_link(partial, name, params['shared_links'].get(name) or os.path.join('..', '..', 'shared', name))
        os.rename(partial, layout.release_dir(release))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if params['remove_src']:
        os.unlink(src)
