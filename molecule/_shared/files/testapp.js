'use strict';
// The one test app of the Molecule scenarios (no dependencies). Behaviour comes from behaviour.json beside this file
// (per release) and env:
//   version, startup_delay_ms (slow start), crash (exit soon after start), crash_after_ms, crash_stdout (say why on
//   stdout only, as many apps do), unhealthy (/health 503).
//   APP_ALLOCATE_MB in env: allocate and hold that much memory (memory limit tests).
//   APP_TOUCH_FILE in env: write that file once listening (in a directory PM2 watches: a restart loop caused by watch).
//   PORT in env: listen on it (without PORT the app only runs, as a worker would); LINES_PER_SEC: write "seq <n>" to
//   stdout at about that rate (log rotation tests).
// GET /health, GET /env (only APP_* and NODEFLEET_* keys), GET / (pid, release, version, instance and the whole env,
// to see what a reload applied).
// Sends 'ready' after listen (wait_ready) and drains on SIGINT, as docs/zero-downtime.md asks of real apps.
const fs = require('fs');
const http = require('http');
const path = require('path');

const here = __dirname;
const behaviourFile = path.join(here, 'behaviour.json');
const behaviour = fs.existsSync(behaviourFile) ? JSON.parse(fs.readFileSync(behaviourFile, 'utf8')) : {};
// PORT_PER_INSTANCE: instance N listens on PORT + N (systemd template instances have no shared port).
const port = Number(process.env.PORT) + (process.env.PORT_PER_INSTANCE ? Number(process.env.NODE_APP_INSTANCE || 0) : 0);
let shuttingDown = false;

const held = [];
if (process.env.APP_ALLOCATE_MB) {
  for (let i = 0; i < Number(process.env.APP_ALLOCATE_MB); i++) held.push(Buffer.alloc(1024 * 1024, 1));
}

if (behaviour.crash) {
  setTimeout(() => {
    (behaviour.crash_stdout ? console.log : console.error)(`crashing on purpose: release ${behaviour.version} is marked crash`);
    process.exit(1);
  }, behaviour.crash_after_ms || 100);
}

const server = http.createServer((req, res) => {
  if (shuttingDown) res.setHeader('Connection', 'close');
  if (req.url === '/health') {
    res.writeHead(behaviour.unhealthy ? 503 : 200, { 'Content-Type': 'text/plain' });
    res.end(behaviour.unhealthy ? 'unhealthy\n' : 'ok\n');
    return;
  }
  let body;
  if (req.url === '/env') {
    body = Object.fromEntries(Object.entries(process.env).filter(([k]) => /^(APP_|NODEFLEET_)/.test(k)));
  } else {
    body = {
      pid: process.pid,
      release: path.basename(fs.realpathSync(here)),
      version: behaviour.version || null,
      instance: process.env.NODE_APP_INSTANCE || null,
      env: process.env,
    };
  }
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify(body) + '\n');
});
server.keepAliveTimeout = 2000;

if (process.env.PORT) {
  setTimeout(() => {
    server.listen(port, () => {
      console.log(`listening on ${port} (release ${behaviour.version || '-'})`);
      if (process.env.APP_TOUCH_FILE) fs.writeFileSync(process.env.APP_TOUCH_FILE, `${process.pid}\n`);
      if (process.send) process.send('ready');
    });
  }, behaviour.startup_delay_ms || 0);
} else {
  setInterval(() => {}, 60000);
}

if (process.env.LINES_PER_SEC) {
  const perTick = Math.max(1, Math.round(Number(process.env.LINES_PER_SEC) / 100));
  let seq = 0;
  setInterval(() => {
    for (let i = 0; i < perTick; i += 1) {
      console.log(`seq ${seq}`);
      seq += 1;
    }
  }, 10);
}


process.on('SIGINT', () => {
  shuttingDown = true;
  server.close(() => process.exit(0));
  server.closeIdleConnections && server.closeIdleConnections();
  setTimeout(() => process.exit(0), 4000).unref();
});
