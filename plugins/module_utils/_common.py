# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""What every part of the backend shares: the domain exceptions, file writes and bounded log tails."""

from __future__ import annotations

import contextlib
import os
import tempfile
import traceback
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

Owner = Optional[Tuple[int, int]]


class Pm2Error(Exception):
    """PM2 or systemd failed, or the live state cannot be acted on safely. ``details`` go into the module result."""

    def __init__(self, msg: str, **details: Any) -> None:
        super().__init__(msg)
        self.details = details


class SpecError(Pm2Error):
    """Invalid input; names the offending option (``field``) and, in a list of apps, the app by its name."""

    def __init__(self, field: str, msg: str, app: Optional[str] = None) -> None:
        text = '%s: %s' % (field, msg)
        details = {'field': field}
        if app:
            text = 'app %s: %s' % (app, text)
            details['app'] = app
        super().__init__(text, **details)
        self.field = field
        self.reason = msg
        self.app = app

    def naming(self, app: str) -> SpecError:
        """The same error, saying which app of a list it is about."""
        return SpecError(self.field, self.reason, app)


class EcosystemError(Exception):
    """A problem with an ecosystem file (pm2_import). The message never contains a value from the file."""


def exit_with(module: Any, produce: Callable[[], Dict[str, Any]]) -> None:
    """A module's edge: exit with what ``produce`` returns; a domain error becomes fail_json with its details."""
    try:
        result = produce()
    except Pm2Error as exc:
        module.fail_json(msg=str(exc), **exc.details)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg='unexpected error: %s' % exc, exception=traceback.format_exc())
    module.exit_json(**result)


def _fill(fd: int, data: Union[bytes, str], mode: int, owner: Owner) -> None:
    os.fchmod(fd, mode)
    if owner:
        os.fchown(fd, *owner)
    with os.fdopen(fd, 'wb') as handle:
        handle.write(data.encode('utf-8') if isinstance(data, str) else data)


def _staged(path: str, data: Union[bytes, str], mode: int, owner: Owner) -> str:
    """A temporary file next to ``path`` holding ``data``; the caller renames it into place or removes it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix='.nodefleet-')
    try:
        _fill(fd, data, mode, owner)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def atomic_write(path: str, data: Union[bytes, str], mode: int, owner: Owner = None) -> None:
    """Replace ``path`` with ``data`` in one rename: readers see the old or the new file, never a partial one."""
    tmp = _staged(path, data, mode, owner)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _missing_dirs(directory: str) -> List[str]:
    """The directories to make for ``directory`` to exist, outermost first."""
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    return missing[::-1]


def atomic_write_all(files: Iterable[Tuple[str, Union[bytes, str], int]], owner: Owner = None) -> None:
    """Write every file of ``files`` ((path, data, mode) each) or none: all of them to temporary files next to their
    paths first (missing directories made, mode 0755), then all renamed into place. A failure before the renames
    removes the temporary files and the directories it made."""
    made: List[str] = []
    staged: List[Tuple[str, str]] = []
    try:
        for path, data, mode in files:
            for directory in _missing_dirs(os.path.dirname(path)):
                os.mkdir(directory, 0o755)
                made.append(directory)
            staged.append((_staged(path, data, mode, owner), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _path in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for directory in reversed(made):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise


def private_temp_file(directory: str, data: Union[bytes, str], owner: Owner = None, prefix: str = 'tmp-',
                      suffix: str = '') -> str:
    """A new file (mode 0600) under a fresh random name in ``directory``; the caller removes it."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    try:
        _fill(fd, data, 0o600, owner)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


def read_tail(path: str, offset: int = 0, limit: int = 16384) -> str:
    """The text of ``path`` from ``offset`` (or its last ``limit`` bytes, whichever is later); '' when unreadable."""
    try:
        with open(path, 'rb') as handle:
            size = handle.seek(0, os.SEEK_END)
            if offset > size:
                offset = 0  # rotated or truncated since: all of it is new
            handle.seek(max(offset, size - limit))
            data = handle.read()
    except OSError:
        return ''
    return data.decode('utf-8', 'replace')


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
