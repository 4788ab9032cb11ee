# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""SMTP relay sink of the watchdog scenario (a peer on the fleet, not part of the code under test).

python3 smtp_sink.py --port 2525 --auth-file /etc/wd-sinks/smtp.json --out /var/lib/wd-sinks/mail.jsonl
Speaks enough ESMTP for smtplib (EHLO, AUTH PLAIN and LOGIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT). Like a relay that
requires authentication, it refuses MAIL before a successful AUTH with the user and password of --auth-file.
Each accepted message becomes one JSON line: {received_at, peer, auth_user, mail_from, rcpt_to, data}.
The password is read from a file (never from argv) and never written out.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import socketserver
import threading
import time


def decode(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--auth-file", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.auth_file, encoding="utf-8") as handle:
        account = json.load(handle)
    lock = threading.Lock()

    def valid(user: str, password: str) -> bool:
        return hmac.compare_digest(user, account["user"]) and hmac.compare_digest(password, account["password"])

    class Session(socketserver.StreamRequestHandler):
        def reply(self, line: str) -> None:
            self.wfile.write((line + "\r\n").encode())

        def read(self) -> str:
            return self.rfile.readline(65536).decode("utf-8", "replace").rstrip("\r\n")

        def auth(self, words: list[str]) -> str | None:
            mechanism = words[1].upper() if len(words) > 1 else ""
            if mechanism == "PLAIN":
                if len(words) > 2:
                    token = words[2]
                else:
                    self.reply("334 ")
                    token = self.read()
                parts = decode(token).split("\0")
                user, password = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
            elif mechanism == "LOGIN":
                self.reply("334 VXNlcm5hbWU6")
                user = decode(self.read())
                self.reply("334 UGFzc3dvcmQ6")
                password = decode(self.read())
            else:
                self.reply("504 mechanism not supported")
                return None
            if valid(user, password):
                self.reply("235 authenticated")
                return user
            self.reply("535 authentication failed")
            return None

        def handle(self) -> None:
            self.reply("220 wd-smtp-sink ESMTP")
            user, mail_from, rcpt_to = None, None, []
            while True:
                line = self.read()
                if not line:
                    return
                words = line.split(" ")
                verb = words[0].upper()
                if verb == "EHLO":
                    self.reply("250-wd-smtp-sink")
                    self.reply("250 AUTH PLAIN LOGIN")
                elif verb == "HELO":
                    self.reply("250 wd-smtp-sink")
                elif verb == "AUTH":
                    user = self.auth(words) or user
                elif verb == "MAIL":
                    if user is None:
                        self.reply("530 authentication required")
                        continue
                    mail_from, rcpt_to = line.split(":", 1)[1].strip(), []
                    self.reply("250 ok")
                elif verb == "RCPT":
                    rcpt_to.append(line.split(":", 1)[1].strip())
                    self.reply("250 ok")
                elif verb == "DATA":
                    if mail_from is None or not rcpt_to:
                        self.reply("503 need MAIL and RCPT first")
                        continue
                    self.reply("354 end with <CRLF>.<CRLF>")
                    lines = []
                    while True:
                        data = self.read()
                        if data == ".":
                            break
                        lines.append(data[1:] if data.startswith("..") else data)
                    record = {"received_at": time.time(), "peer": self.client_address[0], "auth_user": user,
                              "mail_from": mail_from, "rcpt_to": rcpt_to, "data": "\n".join(lines)}
                    with lock, open(args.out, "a", encoding="utf-8") as out:
                        out.write(json.dumps(record) + "\n")
                    mail_from, rcpt_to = None, []
                    self.reply("250 queued")
                elif verb == "RSET":
                    mail_from, rcpt_to = None, []
                    self.reply("250 ok")
                elif verb == "NOOP":
                    self.reply("250 ok")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    socketserver.ThreadingTCPServer(("0.0.0.0", args.port), Session).serve_forever()


if __name__ == "__main__":
    main()
