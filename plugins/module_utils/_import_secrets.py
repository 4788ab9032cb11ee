# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""pm2_import: which env values look secret (by name, shape or entropy), and redaction of messages."""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Optional

SECRET_WORDS = ('SECRET', 'TOKEN', 'PASSWORD', 'PASSWD', 'PRIVATE', 'CREDENTIAL', 'APIKEY', 'API_KEY', 'ACCESS_KEY',
                'PASSPHRASE', 'SIGNATURE', 'COOKIE', 'SESSION_KEY', 'CLIENT_SECRET', 'AUTH')
SECRET_TOKENS = ('KEY', 'PASS', 'PWD', 'SALT', 'DSN', 'CERT', 'JWT', 'HMAC', 'SIGNING')
URL_WITH_PASSWORD_RE = re.compile(r'^[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@', re.IGNORECASE)
PEM_RE = re.compile(r'-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)-----')
ENTROPY_MIN_LENGTH = 20
ENTROPY_THRESHOLD = 3.5
HEX_ENTROPY_MIN_LENGTH = 32


def shannon_entropy(text: str) -> float:
    if not text:
        return 0.0
    counts: dict = {}
    for char in text:
        counts[char] = counts.get(char, 0) + 1
    length = float(len(text))
    return -sum((n / length) * math.log(n / length, 2) for n in counts.values())


def _high_entropy(value: str) -> bool:
    if len(value) < ENTROPY_MIN_LENGTH or any(c.isspace() for c in value):
        return False
    if value.startswith(('/', './', '../', '~/')) or '://' in value:
        return False
    if not (re.search(r'[0-9]', value) and re.search(r'[A-Za-z]', value)):
        return False
    if re.match(r'^[0-9a-fA-F-]+$', value):
        # hex digests and UUIDs: 16 symbols, entropy at most 4
        return len(value.replace('-', '')) >= HEX_ENTROPY_MIN_LENGTH and shannon_entropy(value) >= 3.0
    return shannon_entropy(value) >= ENTROPY_THRESHOLD


def looks_secret(name: Any, value: Any, secret_names: Iterable[str] = (), plain_names: Iterable[str] = ()) -> Optional[str]:
    """Why an env entry looks like a secret ('name', 'entropy', 'url-password', 'pem', 'listed'), or None."""
    upper = str(name).upper()
    if upper in {n.upper() for n in plain_names}:
        return None
    if upper in {n.upper() for n in secret_names}:
        return 'listed'
    tokens = [t for t in re.split(r'[^A-Z0-9]+', upper) if t]
    if any(word in upper for word in SECRET_WORDS) or any(t in SECRET_TOKENS for t in tokens):
        return 'name'
    if isinstance(value, str):
        if PEM_RE.search(value):
            return 'pem'
        if URL_WITH_PASSWORD_RE.match(value):
            return 'url-password'
        if _high_entropy(value):
            return 'entropy'
    return None


def redact_text(text: Any) -> str:

    """Replace every secret-looking word of a message with <redacted> (last line of defence for error texts)."""
    return re.sub(r'\S{%d,}' % ENTROPY_MIN_LENGTH,
                  lambda m: '<redacted>' if (_high_entropy(m.group(0)) or URL_WITH_PASSWORD_RE.match(m.group(0))) else m.group(0),
                  str(text))
