#!/usr/bin/env node
// Development server for the GraphiQL page: serves assets/graphiql/ the way
// the FlowPilot binary does (GET /graphql and /graphiql/<file>, with the same
// Content-Security-Policy) and forwards the API (POST /graphql and the
// WebSocket at /graphql/ws) to a running FlowPilot. Lets the page be edited
// and rebuilt (node build.mjs) without rebuilding the binary.
//
//   node dev-server.mjs [--port 18112] [--upstream http://127.0.0.1:8000] [--assets dir]

import { createServer, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 && args[at + 1] ? args[at + 1] : fallback;
};
const assets = option('--assets', join(here, '..', '..', 'assets', 'graphiql'));
const port = Number(option('--port', '18112'));
const upstream = new URL(option('--upstream', 'http://127.0.0.1:8000'));

const CSP =
  "default-src 'self'; connect-src 'self'; img-src 'self' data:; font-src 'self' data:; " +
  "style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'";
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

function sendFile(res, name, extraHeaders = {}) {
  const path = join(assets, name);
  if (!/^[A-Za-z0-9._-]+$/.test(name) || !existsSync(path)) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  const ext = name.slice(name.lastIndexOf('.'));
  res.writeHead(200, { 'content-type': TYPES[ext] || 'application/octet-stream', ...extraHeaders });
  res.end(readFileSync(path));
}

function proxy(req, res) {
  const upstreamReq = httpRequest(
    {
      host: upstream.hostname,
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers: { ...req.headers, host: upstream.host },
    },
    (upstreamRes) => {
      res.writeHead(upstreamRes.statusCode, upstreamRes.headers);
      upstreamRes.pipe(res);
    },
  );
  upstreamReq.on('error', (err) => {
    res.writeHead(502, { 'content-type': 'text/plain' }).end(`upstream: ${err.message}\n`);
  });
  req.pipe(upstreamReq);
}

const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (req.method === 'GET' && url.pathname === '/graphql' && /text\/html/.test(req.headers.accept || '')) {
    sendFile(res, 'index.html', { 'content-security-policy': CSP, 'cache-control': 'no-cache' });
  } else if (req.method === 'GET' && url.pathname.startsWith('/graphiql/')) {
    sendFile(res, url.pathname.slice('/graphiql/'.length), { 'cache-control': 'public, max-age=31536000, immutable' });
  } else {
    proxy(req, res);
  }
});

// WebSocket upgrades (and anything else upgraded) are piped to the upstream.
server.on('upgrade', (req, socket, head) => {
  const upstreamSocket = connect(Number(upstream.port), upstream.hostname, () => {
    const lines = [`${req.method} ${req.url} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i];
      lines.push(`${name}: ${name.toLowerCase() === 'host' ? upstream.host : req.rawHeaders[i + 1]}`);
    }
    upstreamSocket.write(lines.join('\r\n') + '\r\n\r\n');
    if (head.length) upstreamSocket.write(head);
    upstreamSocket.pipe(socket);
    socket.pipe(upstreamSocket);
  });
  const close = () => {
    socket.destroy();
    upstreamSocket.destroy();
  };
  upstreamSocket.on('error', close);
  socket.on('error', close);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`GraphiQL dev server: http://127.0.0.1:${port}/graphql (API: ${upstream.origin})`);
});
