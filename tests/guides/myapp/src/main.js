'use strict';
// Stand-in for the CRM backend: GET /health answers ok; GET / tells which app and environment answer, and whether
// the e-signature key reached the process (never the key itself). Drains on SIGINT, as PM2 stops it.
const http = require('http');

const port = Number(process.env.PORT || 3000);
const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({
    app: process.env.name || null,
    node_env: process.env.NODE_ENV || null,
    esign_key: (process.env.ESIGN_PRIVATE_KEY || '').length > 1000 ? 'present' : 'missing',
    cwd: process.cwd(),
  }) + '\n');
});
server.listen(port, () => console.log(`listening on ${port}`));
process.on('SIGINT', () => server.close(() => process.exit(0)));
