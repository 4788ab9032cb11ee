'use strict';
// One dependency-free source for every service of the example platform; SERVICE and PORT come from the env.
// GET /health (503 when the release is marked unhealthy), GET / (service, release, version, pid, instance).
// Sends 'ready' once listening (PM2 wait_ready) and drains on SIGINT: stops accepting, answers in-flight
// requests with Connection: close, closes idle keep-alive sockets, exits (PM2 kill_timeout is the backstop).
// release.json is the release's switch: {"version": "...", "crash": true} exits soon after start,
// {"unhealthy": true} fails /health, {"startup_delay_ms": N} starts slowly; "crash_services": [...] limits the crash
// to those services, "crash_stdout": true logs the reason on stdout only (the tests of the deploy's crash reports).
const fs = require('fs');
const http = require('http');
const path = require('path');

const root = path.join(__dirname, '..');
const release = JSON.parse(fs.readFileSync(path.join(root, 'release.json'), 'utf8'));
const build = fs.existsSync(path.join(__dirname, 'build.json'))
  ? JSON.parse(fs.readFileSync(path.join(__dirname, 'build.json'), 'utf8')) : {};
const service = process.env.SERVICE || 'app';
const port = Number(process.env.PORT || 3000);
let draining = false;

if (release.crash && (!release.crash_services || release.crash_services.includes(service))) {
  setTimeout(() => {
    (release.crash_stdout ? console.log : console.error)(`${service}: release ${release.version} is marked crash, exiting`);
    process.exit(1);
  }, release.crash_after_ms || 500);
}

if (service === 'billing-service') {
  // The reason billing is a fleet singleton: this cron must run once in the whole fleet.
  setInterval(() => console.log('billing: cancelling expired orders'), 5 * 60 * 1000).unref();
}

const server = http.createServer((req, res) => {
  if (draining) res.setHeader('Connection', 'close');
  if (req.url === '/health') {
    res.writeHead(release.unhealthy ? 503 : 200, { 'Content-Type': 'text/plain' });
    res.end(release.unhealthy ? 'unhealthy\n' : 'ok\n');
    return;
  }
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({
    service,
    version: release.version,
    release: path.basename(fs.realpathSync(root)),
    built: build.built || null,
    pid: process.pid,
    instance: process.env.NODE_APP_INSTANCE || null,
  }) + '\n');
});
server.keepAliveTimeout = 2000;

setTimeout(() => {
  server.listen(port, () => {
    console.log(`${service} listening on ${port} (release ${release.version})`);
    if (process.send) process.send('ready');
  });
}, release.startup_delay_ms || 0);

process.on('SIGINT', () => {
  draining = true;
  server.close(() => process.exit(0));
  if (server.closeIdleConnections) server.closeIdleConnections();
});
