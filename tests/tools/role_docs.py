# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Role variable tables in docs/roles/<role>.md, generated from roles/<role>/meta/argument_specs.yml.

The table goes between the markers below in each page that has them; the prose around it is written by hand.
Also checks that every default in an argument spec equals the role's defaults/main.yml (one source for each value).

    python3 tests/tools/role_docs.py          # rewrite the tables
    python3 tests/tools/role_docs.py --check  # fail when a page or a default differs (make lint)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BEGIN = '<!-- BEGIN generated from meta/argument_specs.yml by tests/tools/role_docs.py -->'
END = '<!-- END generated -->'
MARKUP = re.compile(r'([OVCEIBM])\(([^()]*(?:\([^()]*\)[^()]*)*)\)')


def plain(text) -> str:
    """Ansible doc markup to Markdown: O(x) V(x) C(x) -> `x`, B(x) -> **x**, I(x) -> *x*."""
    if isinstance(text, list):
        text = ' '.join(text)

    def repl(match):
        kind, inner = match.groups()
        return {'B': '**%s**', 'I': '*%s*'}.get(kind, '`%s`') % inner
    return MARKUP.sub(repl, str(text)).replace('|', '\\|').replace('\n', ' ')


def show_default(option: dict) -> str:
    if 'default' not in option:
        return 'required' if option.get('required') else ''
    value = option['default']
    if value == '' or value == [] or value == {}:
        return '`%s`' % (repr(value) if value != '' else '""')
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    text = text[:-4].strip() if text.endswith('...') else text
    return '`%s`' % text.replace('|', '\\|')


def table(spec: dict) -> list[str]:
    readers = {}
    options = {}
    for entry, data in spec.items():
        for name, option in (data.get('options') or {}).items():
            readers.setdefault(name, []).append(entry)
            options[name] = option
    lines = ['| entry point | what |', '|---|---|']
    lines += ['| `%s` | %s |' % (entry, plain(data.get('short_description', ''))) for entry, data in spec.items()]
    lines += ['', '| variable | type | default | read by | description |', '|---|---|---|---|---|']
    every = set(spec)
    for name in sorted(options):
        option = options[name]
        kind = option.get('type', 'str') + ('/%s' % option['elements'] if option.get('elements') else '')
        by = 'every entry point with options' if set(readers[name]) >= every - {e for e in spec if not spec[e].get('options')} else ', '.join(readers[name])
        lines.append('| `%s` | %s | %s | %s | %s |' % (name, kind, show_default(option), by, plain(option.get('description', ''))))
    for name in sorted(options):
        sub = options[name].get('options')
        if not sub:
            continue
        lines += ['', 'Keys of each item of `%s`:' % name, '', '| key | type | default | description |', '|---|---|---|---|']
        for key, option in sub.items():
            lines.append('| `%s` | %s | %s | %s |' % (key, option.get('type', 'str'), show_default(option), plain(option.get('description', ''))))
    return lines


def check_defaults(role: Path, spec: dict) -> list[str]:
    path = role / 'defaults' / 'main.yml'
    defaults = yaml.safe_load(path.read_text()) if path.exists() else {}
    problems = []
    for entry, data in spec.items():
        for name, option in (data.get('options') or {}).items():
            if name in defaults and 'default' in option and option['default'] != defaults[name]:
                problems.append('%s: %s default %r in argument_specs (%s) differs from defaults/main.yml %r'
                                % (role.name, name, option['default'], entry, defaults[name]))
            if name not in defaults and option.get('default') not in (None, '', [], {}, False):
                problems.append('%s: %s has default %r in argument_specs (%s) but none in defaults/main.yml'
                                % (role.name, name, option['default'], entry))
    return sorted(set(problems))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='fail when a page or a default is not current')
    args = parser.parse_args(argv)
    problems = []
    for role in sorted((ROOT / 'roles').iterdir()):
        spec_path = role / 'meta' / 'argument_specs.yml'
        page = ROOT / 'docs' / 'roles' / ('%s.md' % role.name)
        if not spec_path.exists():
            continue
        spec = yaml.safe_load(spec_path.read_text())['argument_specs']
        problems += check_defaults(role, spec)
        if not page.exists() or BEGIN not in page.read_text():
            continue
        text = page.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        new = head + BEGIN + '\n' + '\n'.join(table(spec)) + '\n' + END + tail
        if new != text:
            if args.check:
                problems.append('%s is not current: run python3 tests/tools/role_docs.py' % page.relative_to(ROOT))
            else:
                page.write_text(new)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
