// The "grpc" bench scenario's upstream: echo.Echo/Unary over h2c (prior
// knowledge) in Node's http2 module, much faster than Python's grpcio, so
// that the upstream is not what limits either proxy. gRPC's wire format by
// hand: the request's length-prefixed messages are answered as they came
// (the echo), with `grpc-status: 0` in trailers. Any other path: grpc-status
// 12 (UNIMPLEMENTED) as a trailers-only answer.
//
//     node bench/grpc/echo.js PORT [HOST]     (prints "PORT <n>" when listening)
'use strict';
const http2 = require('http2');

const port = Number(process.argv[2] || 0);
const host = process.argv[3] || '127.0.0.1';

const server = http2.createServer({
  settings: { maxConcurrentStreams: 1000 },
  peerMaxConcurrentStreams: 1000,
});
server.on('stream', (stream, headers) => {
  if (headers[':path'] !== '/echo.Echo/Unary' || headers[':method'] !== 'POST') {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '12',
                     'grpc-message': 'unknown method' }, { endStream: true });
    return;
  }
  const chunks = [];
  stream.on('data', (c) => chunks.push(c));
  stream.on('end', () => {
    // a client that cancelled (a proxy whose own client went away) has
    // reset the stream by now: nothing to answer
    if (stream.destroyed || stream.closed) return;
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => {
      if (!stream.destroyed) stream.sendTrailers({ 'grpc-status': '0' });
    });
    stream.end(Buffer.concat(chunks));
  });
  stream.on('error', () => {});
});
server.on('sessionError', () => {});
// Whatever a misbehaving client makes a stream do, the server stays up: the
// bench would otherwise measure a dead upstream.
process.on('uncaughtException', (e) => { process.stderr.write(`echo.js: ${e.stack || e}\n`); });
server.listen(port, host, () => {
  process.stdout.write(`PORT ${server.address().port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { server.close(); process.exit(0); });
}
