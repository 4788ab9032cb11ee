'use strict';
// Stand-in for every script the round-trip files name (the seeds' real code is not part of them); the same file on
// both hosts. At start it records what the app sees - process.env, argv, execArgv, cwd, pid - in
// /run/roundtrip-env/<user>.<app>.<instance>.json (mode 0600, read by the verifier as root), tells PM2 it is ready
// (wait_ready) and then stays silent: several seeds watch their cwd, and writes there would restart them.
const fs = require('fs');
const os = require('os');
const path = require('path');

const app = process.env.name || path.basename(process.argv[1]);
const instance = process.env.NODE_APP_INSTANCE || '0';
const file = path.join('/run/roundtrip-env', `${os.userInfo().username}.${app}.${instance}.json`);
const record = {
  pid: process.pid,
  ppid: process.ppid,
  argv: process.argv.slice(2),
  execArgv: process.execArgv,
  cwd: process.cwd(),
  env: process.env,
};
fs.writeFileSync(`${file}.tmp`, JSON.stringify(record), { mode: 0o600 });
fs.renameSync(`${file}.tmp`, file);

if (process.send) process.send('ready');
setInterval(() => {}, 60000);
process.on('SIGINT', () => process.exit(0));
