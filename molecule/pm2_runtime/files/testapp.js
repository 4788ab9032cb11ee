'use strict';
// Test app for the role scenarios (no dependencies).
// PORT set: answers GET / on 127.0.0.1 with {pid, env} (the whole process env, to see what a reload applied).
// LINES_PER_SEC set: writes "seq <n>" to stdout at about that rate, for log rotation tests.
const http = require('http');

if (process.env.PORT) {
  http.createServer((req, res) => {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ pid: process.pid, env: process.env }));
  }).listen(Number(process.env.PORT), '127.0.0.1');
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

setInterval(() => {}, 60000);
