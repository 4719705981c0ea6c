// The HTTP app of the reload workload for PM2 (Node, cluster mode): PM2's cluster mode
// shares the port between the instances (Node's cluster module). Every request gets
// `200 pid=<pid>` and the connection is closed after the answer. It tells PM2 it is ready
// (`wait_ready`) once listening, and on SIGINT (PM2's stop signal) it stops accepting,
// answers what it has, then exits 0.
"use strict";
const http = require("http");

const port = Number(process.env.PORT);
const body = `pid=${process.pid}\n`;
const server = http.createServer((req, res) => {
  res.writeHead(200, {
    "Content-Type": "text/plain",
    "Content-Length": Buffer.byteLength(body),
    Connection: "close",
  });
  res.end(body);
});
server.keepAliveTimeout = 0;
server.listen(port, "127.0.0.1", () => {
  if (process.send) process.send("ready");
});
const stop = () => server.close(() => process.exit(0));
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
