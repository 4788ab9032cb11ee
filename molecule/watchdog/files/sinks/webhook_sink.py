# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Webhook receiver of the watchdog scenario (a peer on the fleet, not part of the code under test).

python3 webhook_sink.py --port 9200 --token-file /etc/wd-sinks/webhook.json --out /var/lib/wd-sinks/webhook.jsonl
Each POST becomes one JSON line: {received_at, path, authorized, payload}. Only a request with
"Authorization: Bearer <token>" is authorized (204, payload kept); others get 401 and no payload is kept.
The token is read from a file (never from argv); it is never written out.
"""

from __future__ import annotations

import argparse
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.token_file, encoding="utf-8") as handle:
        expected = "Bearer " + json.load(handle)["token"]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            authorized = hmac.compare_digest(self.headers.get("Authorization", ""), expected)
            try:
                payload = json.loads(body) if authorized else None
            except ValueError:
                payload, authorized = None, False
            record = {"received_at": time.time(), "path": self.path, "authorized": authorized, "payload": payload}
            with lock, open(args.out, "a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
            self.send_response(204 if authorized else 401)
            self.end_headers()

        def log_message(self, format, *log_args) -> None:  # pylint: disable=redefined-builtin
            pass

    ThreadingHTTPServer(("0.0.0.0", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
