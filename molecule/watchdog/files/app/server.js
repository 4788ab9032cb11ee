'use strict';
// The watchdog scenario's app: one source for every service (SERVICE and PORT from the env), drain-friendly like
// docs/example/app (ready after listen, Connection: close and exit on SIGINT), with two faults to inject:
//   POST /fault          this process answers /health with 500 until it is restarted (a hang a restart cures);
//   data/fail-<SERVICE>  while this file exists (shared dir), /health answers 500 in every process (a broken app).
// release.json: {"version": "...", "startup_delay_ms": {"<service>": ms}} (a slow start in one release).
const fs = require('fs');
const http = require('http');
const path = require('path');

const release = JSON.parse(fs.readFileSync(path.join(__dirname, 'release.json'), 'utf8'));
const service = process.env.SERVICE || 'app';
const port = Number(process.env.PORT || 3000);
const failFlag = path.join(process.cwd(), 'data', `fail-${service}`);
let broken = false;
let draining = false;

const server = http.createServer((req, res) => {
  if (draining) res.setHeader('Connection', 'close');
  if (req.url === '/fault' && req.method === 'POST') {
    broken = true;
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(`pid ${process.pid} broken\n`);
    return;
  }
  if (req.url === '/health') {
    const failing = broken || fs.existsSync(failFlag);
    res.writeHead(failing ? 500 : 200, { 'Content-Type': 'text/plain' });
    res.end(failing ? 'failing\n' : 'ok\n');
    return;
  }
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({
    service,
    version: release.version,
    release: path.basename(fs.realpathSync(__dirname)),
    pid: process.pid,
    instance: process.env.NODE_APP_INSTANCE || null,
  }) + '\n');
});
server.keepAliveTimeout = 2000;

setTimeout(() => {
  server.listen(port, () => {
    if (process.send) process.send('ready');
  });
}, (release.startup_delay_ms || {})[service] || 0);

process.on('SIGINT', () => {
  draining = true;
  server.close(() => process.exit(0));
  if (server.closeIdleConnections) server.closeIdleConnections();
});
