// A Node.js test app that serves on the listening socket at fd 3 (systemd convention):
//
//     node node_fd_http.js        (socket at fd 3; LISTEN_FDS / LISTEN_PID are not checked)
//
//     GET /        pid=<pid> instance=<CORRAL_INSTANCE or NODE_APP_INSTANCE>
//     GET /slow    the same after 0.3 s (/slow?seconds=S for another delay)
//
// SIGINT and SIGTERM stop it gracefully: server.close() stops accepting (connections still
// queued on the shared socket stay there for the other instances), idle keep-alive
// connections are closed at once, a request in flight gets its answer (with
// "Connection: close"), then it exits 0.
//
// Node's core has no unix datagram sockets, so it cannot send sd_notify READY=1 without a
// native add-on: under corral a Node app is ready by min_uptime or a health check.
'use strict';

const http = require('http');

const instance = process.env.CORRAL_INSTANCE ?? process.env.NODE_APP_INSTANCE ?? '';
let stopping = false;

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://app');
  const answer = (status, text) => {
    const headers = { 'Content-Type': 'text/plain; charset=utf-8' };
    if (stopping) headers.Connection = 'close';
    res.writeHead(status, headers);
    res.end(text);
  };
  const hello = `pid=${process.pid} instance=${instance}\n`;
  if (url.pathname === '/') {
    answer(200, hello);
  } else if (url.pathname === '/slow') {
    const seconds = Number(url.searchParams.get('seconds') ?? '0.3');
    setTimeout(() => answer(200, hello), seconds * 1000);
  } else {
    answer(404, 'not found\n');
  }
});

function stop(signal) {
  if (stopping) return;
  stopping = true;
  console.log(`node_fd_http[${process.pid}]: ${signal}: stopping gracefully`);
  server.close(() => {
    console.log(`node_fd_http[${process.pid}]: stopped`);
    process.exit(0);
  });
  server.closeIdleConnections();
}
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGTERM', () => stop('SIGTERM'));

server.on('error', (err) => {
  console.error(`node_fd_http: cannot serve on fd 3: ${err.message}`);
  process.exit(2);
});
server.listen({ fd: 3 }, () => {
  console.log(`node_fd_http[${process.pid}]: serving on fd 3 (instance '${instance}')`);
});
