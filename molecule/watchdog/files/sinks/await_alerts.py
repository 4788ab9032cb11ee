# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Waits until the sinks of the watchdog scenario received the expected alerts; prints what they received.

python3 await_alerts.py --after EPOCH --timeout 60 --expect node1/api/failing/pm2\\ reload --expect node1/api/recovered
An expectation HOST/APP/EVENT[/ACTION-PREFIX] is met when the webhook got an authorized payload and the SMTP sink a
mail (from an authenticated session) with that host, app and event (and an action starting with the prefix),
received after --after. Prints {"met": bool, "hooks": [...], "mails": [...]} with every record after --after;
rc 0 when all are met, 1 on timeout. With --settle S it then keeps reading for S seconds (to see what else comes).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import time

HOOKS = "/var/lib/wd-sinks/webhook.jsonl"
MAILS = "/var/lib/wd-sinks/smtp.jsonl"


def records(path: str, after: float) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as handle:
            found = [json.loads(line) for line in handle if line.strip()]
    except OSError:
        return []
    return [r for r in found if r["received_at"] > after]


def mail_fields(record: dict) -> dict:
    """The watchdog's mail body is one 'key: value' line per payload field."""
    message = email.message_from_string(record["data"], policy=email.policy.default)
    body = message.get_content()
    fields = dict(line.split(": ", 1) for line in body.splitlines() if ": " in line)
    fields.update(subject=str(message["Subject"]), to=str(message["To"]), sender=str(message["From"]))
    return fields


def met(expect: str, hooks: list[dict], mails: list[dict]) -> bool:
    host, app, event, *rest = expect.split("/", 3)
    prefix = rest[0] if rest else ""

    def match(fields: dict) -> bool:
        return (fields.get("host") == host and fields.get("app") == app and fields.get("event") == event
                and str(fields.get("action", "")).startswith(prefix))

    return (any(h["authorized"] and match(h["payload"]) for h in hooks)
            and any(m["auth_user"] and match(mail_fields(m)) for m in mails))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=float, required=True)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--settle", type=float, default=0)
    parser.add_argument("--expect", action="append", default=[])
    args = parser.parse_args()
    deadline = time.time() + args.timeout
    while True:
        hooks, mails = records(HOOKS, args.after), records(MAILS, args.after)
        done = all(met(e, hooks, mails) for e in args.expect)
        if done or time.time() > deadline:
            break
        time.sleep(0.25)
    if done and args.settle:
        time.sleep(args.settle)
        hooks, mails = records(HOOKS, args.after), records(MAILS, args.after)
    for mail in mails:
        mail["fields"] = mail_fields(mail)
    print(json.dumps({"met": done, "hooks": hooks, "mails": mails}))
    return 0 if done else 1


if __name__ == "__main__":
    raise SystemExit(main())
