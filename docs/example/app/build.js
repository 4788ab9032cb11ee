'use strict';
// The build step of the example: copies src/ to dist/ and stamps it, as a TypeScript or Nest build would.
const fs = require('fs');
const path = require('path');

const dist = path.join(__dirname, 'dist');
fs.rmSync(dist, { recursive: true, force: true });
fs.mkdirSync(dist);
for (const name of fs.readdirSync(path.join(__dirname, 'src'))) {
  fs.copyFileSync(path.join(__dirname, 'src', name), path.join(dist, name));
}
fs.writeFileSync(path.join(dist, 'build.json'), JSON.stringify({ built: new Date().toISOString() }) + '\n');
