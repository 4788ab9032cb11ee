# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_import: the sandboxed node child of _ecosystem.evaluate_js, run with everything it writes read as it comes.

The child gets a pipe of its own for the result; its stdout and stderr are the ecosystem file's output (console.log at
load time). The result is kept up to a cap, the file's output only counted up to another; past either cap, or past
the timeout, the child is killed, so the controller's memory stays bounded whatever the file does. The child runs in
a session of its own (no signal to the Ansible worker's process group reaches it, and none of its reaches it back).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from typing import Dict, List, Optional, Tuple

from ansible_collections.nodefleet.pm2.plugins.module_utils._common import EcosystemError

Printed = Dict[str, int]


def _kill(proc: subprocess.Popen) -> None:
    try:
        proc.kill()
    except OSError:
        pass
    proc.wait()


class _Collector:
    """What the child writes: the result kept up to max_result bytes, stdout and stderr counted up to max_printed."""

    def __init__(self, proc: subprocess.Popen, result_fd: int, path: str, max_result: int, max_printed: int) -> None:
        self.proc = proc
        self.path = path
        self.max_result = max_result
        self.max_printed = max_printed
        self.streams = {proc.stdout.fileno(): 'stdout', proc.stderr.fileno(): 'stderr', result_fd: 'result'}
        self.result = bytearray()
        self.printed: Printed = {'stdout': 0, 'stderr': 0}

    def stop(self, message: str) -> None:
        _kill(self.proc)
        raise EcosystemError(message)

    def take(self, fd: int, chunk: bytes) -> None:
        if self.streams[fd] == 'result':
            self.result += chunk
            if len(self.result) > self.max_result:
                self.stop('the evaluated ecosystem file %s is larger than %d bytes' % (self.path, self.max_result))
        else:
            self.printed[self.streams[fd]] += len(chunk)
            if sum(self.printed.values()) > self.max_printed:
                self.stop('the ecosystem file %s printed more than %d bytes while it was evaluated (stopped)' % (self.path, self.max_printed))


def _pump(collector: _Collector, selector: selectors.BaseSelector, deadline: float, timeout: float) -> Optional[int]:
    """Read until every stream is closed; then the child's return code."""
    too_long = 'evaluating %s with node took longer than %s s (timeout)' % (collector.path, timeout)
    for fd in collector.streams:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    while selector.get_map():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            collector.stop(too_long)
        for key, _events in selector.select(remaining):
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if chunk:
                collector.take(key.fd, chunk)
            else:
                selector.unregister(key.fd)
    try:
        return collector.proc.wait(max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        collector.stop(too_long)
    return None  # not reached: stop() raises


def run_bounded(argv: List[str], cwd: str, env: Dict[str, str], result_pipe: Tuple[int, int], timeout: float, path: str,
                max_result: int, max_printed: int) -> Tuple[bytes, Printed, Optional[int]]:
    """Run the evaluator; return (result bytes, {'stdout': n, 'stderr': n} bytes printed, return code).

    result_pipe is an os.pipe() whose write end the child writes its result to (passed as its fd number in argv);
    both ends are closed here. Raises EcosystemError past a cap or the timeout, OSError when the child cannot start.
    """
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(result_pipe[1],), start_new_session=True)
    except OSError:
        os.close(result_pipe[0])
        raise
    finally:
        os.close(result_pipe[1])
    collector = _Collector(proc, result_pipe[0], path, max_result, max_printed)
    selector = selectors.DefaultSelector()
    try:
        returncode = _pump(collector, selector, time.monotonic() + timeout, timeout)
    finally:
        selector.close()
        os.close(result_pipe[0])
        proc.stdout.close()
        proc.stderr.close()
        if proc.poll() is None:
            _kill(proc)
    return bytes(collector.result), collector.printed, returncode
