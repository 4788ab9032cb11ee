'use strict';
// The build step (a NestJS build in the real project): src/ to dist/.
const fs = require('fs');
const path = require('path');

const dist = path.join(__dirname, 'dist');
fs.rmSync(dist, { recursive: true, force: true });
fs.mkdirSync(dist);
for (const name of fs.readdirSync(path.join(__dirname, 'src'))) {
  fs.copyFileSync(path.join(__dirname, 'src', name), path.join(dist, name));
}
