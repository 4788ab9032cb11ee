# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Deploy locks on one host: one JSON file per app, created with O_EXCL so two runs can never both hold it.

take    LOCK_DIR TOKEN OWNER_JSON TTL STEAL_TOKENS NAME...  -> {"taken": [...], "held": {name: lock}, "stolen": {...}}
release LOCK_DIR TOKEN NAME...                              -> {"released": [...]}
A lock older than TTL seconds, or whose token is in STEAL_TOKENS (comma list: runs known dead), is taken over.
Taking is all or nothing: when one app is held by someone else, the locks taken by this call are given back.
"""
import json
import os
import sys
import time


def read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def create(path, lock):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(lock, handle)


def take(lock_dir, token, owner, ttl, steal, names):
    os.makedirs(lock_dir, mode=0o755, exist_ok=True)
    lock = dict(json.loads(owner), token=token, time=int(time.time()))
    taken, held, stolen = [], {}, {}
    for name in names:
        path = os.path.join(lock_dir, name + ".lock")
        current = read(path)
        if current and current.get("token") == token:
            taken.append(name)
            continue
        if current is not None:
            stale = time.time() - current.get("time", 0) > ttl or current.get("token") in steal
            if not stale:
                held[name] = current
                continue
            stolen[name] = current
            os.unlink(path)
        elif os.path.exists(path):  # unreadable leftover (half-written): stale by definition
            stolen[name] = {"unreadable": True}
            os.unlink(path)
        try:
            create(path, lock)
            taken.append(name)
        except FileExistsError:  # another run won the race between our read and create
            held[name] = read(path) or {"owner": "unknown"}
    if held:
        release(lock_dir, token, [n for n in taken if n not in stolen] + list(stolen))
        taken = []
    return {"taken": taken, "held": held, "stolen": stolen if not held else {}}


def release(lock_dir, token, names):
    released = []
    for name in names:
        path = os.path.join(lock_dir, name + ".lock")
        current = read(path)
        if current and current.get("token") == token:
            os.unlink(path)
            released.append(name)
    return {"released": released}


def main(argv):
    if argv[1] == "take":
        result = take(argv[2], argv[3], argv[4], int(argv[5]), set(filter(None, argv[6].split(","))), argv[7:])
    elif argv[1] == "release":
        result = release(argv[2], argv[3], argv[4:])
    else:
        raise SystemExit("usage: deploy_lock.py take|release ...")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
