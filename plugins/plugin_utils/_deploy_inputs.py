# Copyright: Contributors to the nodefleet.pm2 project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The deploy's inputs, checked and resolved on the controller before any host is touched (pure functions).

host_inputs(): one host's pm2_deploy_* variables -> the apps it runs (run_on, instance counts), the pm2_app items,
health checks, load balancer servers, lock names; every error names the variable, the app and the host.
"""

from __future__ import annotations

import re

from ansible_collections.nodefleet.pm2.plugins.module_utils._options import name_problem

PROJECT_RE = re.compile(r'^[a-z0-9][a-z0-9_.-]*$')
RELEASE_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$')
SHA256_RE = re.compile(r'^[0-9a-fA-F]{64}$')
PERCENT_RE = re.compile(r'^([0-9]+(?:\.[0-9]+)?)%$')
MAX_INSTANCES = 256
APP_KEYS = ('name', 'script', 'exec_mode', 'instances', 'env', 'env_file', 'health', 'lb_backend', 'lb_server', 'lb_port',
            'pm2', 'singleton', 'run_on', 'supervisor')
HEALTH_KEYS = ('url', 'port', 'path', 'status', 'timeout', 'retries', 'delay', 'command')
# pm2_app controls the deploy sets itself; an app's pm2: dict must not override them.
RESERVED_PM2 = ('name', 'script', 'cwd', 'exec_mode', 'instances', 'state', 'supervisor', 'env', 'env_file', 'release_path')
HOOK_STEPS = ('build', 'ship', 'activate', 'health')


class InputError(Exception):
    """Bad deploy input; the message names the variable (and app, host)."""


def _int(value, field: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise InputError('%s: expected a number, got %r' % (field, value))
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise InputError('%s: expected a whole number, got %r' % (field, value))
    if low is not None and number < low:
        raise InputError('%s: must be at least %d, got %d' % (field, low, number))
    if high is not None and number > high:
        raise InputError('%s: must be at most %d, got %d' % (field, high, number))
    return number


def _str(value, field: str, allow_empty: bool = False) -> str:
    if value is None:
        value = ''
    if not isinstance(value, str):
        raise InputError('%s: expected a string, got %r' % (field, value))
    if not value and not allow_empty:
        raise InputError('%s: must not be empty' % field)
    return value


def check_app_name(name, field: str) -> str:
    problem = name_problem(name)  # the rule pm2_app applies, so the plan refuses what the host would
    if problem:
        raise InputError('%s: %s' % (field, problem))
    return name


def parse_serial(value) -> list:
    """pm2_deploy_serial -> a list for Ansible's serial (counts >= 1, percentages 1-100%)."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise InputError('pm2_deploy_serial: an empty list; give a count, a percentage or a list of them')
    batches = []
    for item in items:
        text = str(item).strip()
        match = PERCENT_RE.match(text)
        if match:
            percent = float(match.group(1))
            if not 0 < percent <= 100:
                raise InputError('pm2_deploy_serial: %r: a percentage must be above 0%% and at most 100%%' % (item,))
            batches.append(text)
        else:
            batches.append(_int(item, 'pm2_deploy_serial', low=1))
    return batches


def resolve_instances(value, field: str):
    """A count 1..MAX_INSTANCES, or 'max' / a negative count (all CPUs but N), resolved by pm2_app on the host."""
    if isinstance(value, str) and value.strip() == 'max':
        return 'max'
    number = _int(value, field, high=MAX_INSTANCES)
    if number == 0:
        raise InputError('%s: 0 instances; use "max" for one per CPU, or remove the app' % field)
    return number


def _health(app: dict, field: str, defaults: dict) -> dict:
    health = app.get('health')
    if not isinstance(health, dict) or not health:
        raise InputError('%s.health: every app needs a health check: {port: N} (GET /health), {url: ...} or {command: ...}' % field)
    unknown = sorted(set(health) - set(HEALTH_KEYS))
    if unknown:
        raise InputError('%s.health: unknown key %s (known: %s)' % (field, ', '.join(unknown), ', '.join(HEALTH_KEYS)))
    check = {'name': app['name']}
    if health.get('command'):
        check['command'] = _str(health['command'], field + '.health.command')
    elif health.get('url'):
        url = _str(health['url'], field + '.health.url')
        if not url.startswith(('http://', 'https://')):
            raise InputError('%s.health.url: %r is not an http(s) URL' % (field, url))
        check['url'] = url
    elif health.get('port') is not None:
        check['port'] = _int(health['port'], field + '.health.port', 1, 65535)
        path = _str(health.get('path') or '/health', field + '.health.path')
        if not path.startswith('/'):
            raise InputError('%s.health.path: %r must start with /' % (field, path))
        check['path'] = path
    else:
        raise InputError('%s.health: needs port (GET /health on 127.0.0.1), url or command' % field)
    if 'command' not in check:
        check['status'] = _int(health.get('status', 200), field + '.health.status', 100, 599)
    check['timeout'] = _int(health.get('timeout', defaults['timeout']), field + '.health.timeout', 1)
    check['retries'] = _int(health.get('retries', defaults['retries']), field + '.health.retries', 1)
    check['delay'] = _int(health.get('delay', defaults['delay']), field + '.health.delay', 0)
    return check


def _runs_here(app: dict, field: str, host: str, groups: list, known: set) -> bool:
    targets = app.get('run_on', [])
    targets = [targets] if isinstance(targets, str) else targets
    if not isinstance(targets, list) or not all(isinstance(t, str) and t for t in targets):
        raise InputError('%s.run_on: expected a host or group name, or a list of them' % field)
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise InputError('%s.run_on: %s is neither an inventory host nor a group' % (field, ', '.join(unknown)))
    return not targets or host in targets or bool(set(targets) & set(groups))


def _choice(app: dict, key: str, field: str, choices: tuple, default: str, what: str) -> str:
    value = app.get(key, default)
    if value not in choices:
        raise InputError('%s.%s: must be %s, got %r' % (field, key, what, value))
    return value


def _env_and_file(app: dict, field: str) -> tuple[dict, bool | str]:
    env = app.get('env') or {}
    if not isinstance(env, dict) or not all(isinstance(v, (str, int, float, bool)) for v in env.values()):
        raise InputError('%s.env: expected a dict of strings or numbers' % field)
    env_file = app.get('env_file', False)
    if not isinstance(env_file, (bool, str)):
        raise InputError('%s.env_file: true (the file pm2_env renders) or a path, got %r' % (field, env_file))
    if isinstance(env_file, str) and not env_file.startswith('/'):
        raise InputError('%s.env_file: %r must be an absolute path (or true)' % (field, env_file))
    return env, env_file


def _pm2_options(app: dict, field: str) -> dict:
    pm2 = app.get('pm2') or {}
    if not isinstance(pm2, dict):
        raise InputError('%s.pm2: expected a dict of pm2_app options' % field)
    reserved = sorted(set(pm2) & set(RESERVED_PM2))
    if reserved:
        raise InputError('%s.pm2: %s is set by the deploy itself; set it on the app (or leave it out)' % (field, ', '.join(reserved)))
    return pm2


def _lb_keys(app: dict, field: str) -> None:
    for key in ('lb_backend', 'lb_server'):
        if key in app:
            _str(app[key], '%s.%s' % (field, key))
    if 'lb_port' in app:
        _int(app['lb_port'], field + '.lb_port', 1, 65535)


def _app(app, index: int, ctx: dict) -> dict:
    if not isinstance(app, dict):
        raise InputError('pm2_deploy_apps[%d]: expected a dict, got %r' % (index, app))
    name = check_app_name(app.get('name'), 'pm2_deploy_apps[%d].name' % index)
    field = 'pm2_deploy_apps[%s]' % name
    unknown = sorted(set(app) - set(APP_KEYS))
    if unknown:
        raise InputError('%s: unknown key %s (known: %s)' % (field, ', '.join(unknown), ', '.join(APP_KEYS)))
    script = _str(app.get('script'), field + '.script')
    if script.startswith('/'):
        raise InputError('%s.script: %r must be relative to the release directory' % (field, script))
    env, env_file = _env_and_file(app, field)
    _lb_keys(app, field)
    instances = ctx['instances'].get(name, app.get('instances', 1))
    where = 'pm2_deploy_instances[%s]' % name if name in ctx['instances'] else field + '.instances'
    return dict(app, name=name, script=script,
                exec_mode=_choice(app, 'exec_mode', field, ('fork', 'cluster'), 'fork', 'fork or cluster'),
                supervisor=_choice(app, 'supervisor', field, ('pm2', 'systemd'), 'pm2', 'pm2 or systemd'),
                singleton=_choice(app, 'singleton', field, ('', 'host', 'fleet'), '', 'host or fleet'),
                instances=resolve_instances(instances, where), health=_health(app, field, ctx['health']),
                env=env, env_file=env_file, pm2=_pm2_options(app, field), field=field)


def _port_clashes(apps: list[dict]) -> None:
    seen = {}
    for app in apps:
        ports = set()
        if 'port' in app['health']:
            ports.add(app['health']['port'])
        if str(app['env'].get('PORT', '')).isdigit():
            ports.add(int(app['env']['PORT']))
        for port in ports:
            if port in seen and seen[port] != app['name']:
                raise InputError('%s: port %d is also the port of %s on this host' % (app['field'], port, seen[port]))
            seen[port] = app['name']


def pm2_item(app: dict, deploy_to: str, env_dir: str, user: str) -> dict:
    current = deploy_to.rstrip('/') + '/current'
    item = dict(app['pm2'], name=app['name'], script='%s/%s' % (current, app['script']), cwd=current,
                exec_mode=app['exec_mode'], instances=app['instances'], state='started', supervisor=app['supervisor'])
    if app['env']:
        item['env'] = dict((k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in app['env'].items())
    if app['env_file'] is True:
        item['env_file'] = '%s/%s/%s.env' % (env_dir.rstrip('/'), user, app['name'])
    elif app['env_file']:
        item['env_file'] = app['env_file']
    return item


def _project_paths(v: dict) -> tuple[str, str, str]:
    """(project, deploy_to, user), checked."""
    project = _str(v.get('pm2_deploy_project'), 'pm2_deploy_project')
    if not PROJECT_RE.match(project):
        raise InputError('pm2_deploy_project: %r must match %s' % (project, PROJECT_RE.pattern))
    deploy_to = _str(v.get('pm2_deploy_to'), 'pm2_deploy_to')
    if not deploy_to.startswith('/') or deploy_to.rstrip('/') == '':
        raise InputError('pm2_deploy_to: %r must be an absolute path below /' % deploy_to)
    return project, deploy_to.rstrip('/'), _str(v.get('pm2_deploy_user'), 'pm2_deploy_user')


def _all_apps(v: dict) -> tuple[list[dict], list[str]]:
    """Every app of the project, checked (whatever host it runs on), and the fleet singletons' names."""
    apps_in = v.get('pm2_deploy_apps')
    if not isinstance(apps_in, list) or not apps_in:
        raise InputError('pm2_deploy_apps: the project needs at least one app (a list of dicts)')
    instances = v.get('pm2_deploy_instances') or {}
    if not isinstance(instances, dict):
        raise InputError('pm2_deploy_instances: expected a dict app name -> instance count')
    health = {k: v.get('pm2_deploy_health_' + k) for k in ('retries', 'delay', 'timeout')}
    _int(health['retries'], 'pm2_deploy_health_retries', 1)
    _int(health['delay'], 'pm2_deploy_health_delay', 0)
    _int(health['timeout'], 'pm2_deploy_health_timeout', 1)
    ctx = {'instances': instances, 'health': health}
    apps = []
    for index, raw in enumerate(apps_in):
        app = _app(raw, index, ctx)
        if app['name'] in [a['name'] for a in apps]:
            raise InputError('pm2_deploy_apps[%s]: the name is listed twice' % app['name'])
        apps.append(app)
    unknown_counts = sorted(set(instances) - set(a['name'] for a in apps))
    if unknown_counts:
        raise InputError('pm2_deploy_instances: %s is not an app of pm2_deploy_apps' % ', '.join(unknown_counts))
    return apps, [a['name'] for a in apps if a['singleton'] == 'fleet']


def _shared(v: dict) -> tuple[list, dict]:
    shared_dirs = v.get('pm2_deploy_shared_dirs') or []
    shared_links = v.get('pm2_deploy_shared_links') or {}
    if not isinstance(shared_dirs, list) or not all(isinstance(d, str) and d and not d.startswith('/') and '..' not in d.split('/')
                                                    for d in shared_dirs):
        raise InputError('pm2_deploy_shared_dirs: a list of relative directory names')
    if not isinstance(shared_links, dict):
        raise InputError('pm2_deploy_shared_links: expected a dict path in the release -> target on the host')
    return shared_dirs, shared_links


def host_inputs(host: str, hostvars: dict, groups: list, known: set) -> dict:
    """One host's resolved deploy: apps, pm2_app items (this host's + absent for the project's others), checks."""
    v = hostvars
    project, deploy_to, user = _project_paths(v)
    every_app, fleet_singletons = _all_apps(v)
    apps = [a for a in every_app if _runs_here(a, a['field'], host, groups, known)]
    _port_clashes(apps)
    env_dir = _str(v.get('pm2_deploy_env_dir'), 'pm2_deploy_env_dir')
    here = [a['name'] for a in apps]
    items = [pm2_item(a, deploy_to, env_dir, user) for a in apps] + [
        {'name': a['name'], 'state': 'absent'} for a in every_app if a['name'] not in here]
    lb_servers = [{'backend': a['lb_backend'], 'server': a.get('lb_server') or host, 'app': a['name']}
                  for a in apps if a.get('lb_backend')]
    shared_dirs, shared_links = _shared(v)
    return {
        'project': project, 'to': deploy_to, 'user': user,
        'group': _str(v.get('pm2_deploy_group') or user, 'pm2_deploy_group'),
        'scope': {'user': user, 'pm2_home': v.get('pm2_deploy_pm2_home') or None,
                  'executable': v.get('pm2_deploy_pm2_executable') or None},
        'apps': [{k: a[k] for k in a if k != 'field'} for a in apps], 'items': items,
        'health': [a['health'] for a in apps], 'lb_servers': lb_servers,
        'lock_apps': here, 'fleet_singletons': fleet_singletons,
        'keep': _int(v.get('pm2_deploy_keep_releases'), 'pm2_deploy_keep_releases', 2),
        'shared_dirs': shared_dirs, 'shared_links': shared_links,
        'min_free_mb': _int(v.get('pm2_deploy_min_free_mb', 0), 'pm2_deploy_min_free_mb', 0),
    }


def topology_violations(placed: dict, hosts: list[str], fleet_singletons: list[str]) -> list[str]:
    """placed: host -> its resolved apps. One sentence per violation, naming the app and the hosts."""
    out = []
    where = {}
    for host in hosts:
        for app in placed[host]:
            where.setdefault(app['name'], []).append(host)
            if app['singleton'] in ('host', 'fleet'):
                if app['exec_mode'] == 'cluster':
                    out.append('%s is a %s singleton but runs in cluster mode on %s' % (app['name'], app['singleton'], host))
                if str(app['instances']) != '1':
                    out.append('%s is a %s singleton but asks for %s instances on %s' % (app['name'], app['singleton'], app['instances'], host))
    for name in sorted(set(fleet_singletons)):
        on = where.get(name, [])
        if len(on) != 1:
            out.append('%s is a fleet singleton but would run on %d hosts of the target set%s' % (
                name, len(on), (': ' + ', '.join(on)) if on else ' (run_on names none of %s)' % ', '.join(hosts)))
    return out
