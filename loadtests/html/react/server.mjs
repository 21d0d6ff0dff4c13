// The React reference for loadtests/html/bench_html.py: the page of ../page.py,
// rendered by react-dom/server. Same routes, same markup, same delays.
//
//     NODE_ENV=production node server.mjs PORT
//     GET /page?delays=10,20,...   one <Suspense> per delay, renderToPipeableStream
//     GET /plain?delays=10,20,...  the same sections inline, renderToString
//     GET /healthz
//
// A boundary's child suspends with use() on a promise made per request before the
// render starts (a promise made during render would be a new one on every retry).
// NODE_ENV must be "production" before react-dom loads, or the development build
// (several times slower) is what gets measured: the imports below are dynamic so
// that this file can set it itself.
import { createServer } from 'node:http';

process.env.NODE_ENV = 'production';
const { createElement: h, Suspense, use } = await import('react');
const { renderToPipeableStream, renderToString } = await import('react-dom/server');

const TITLE = 'Streaming benchmark';
const MAX_BOUNDARIES = 100; // bounds the timers one request can start
const MAX_DELAY_MS = 10_000;

function Section({ i, delay }) {
  // Template strings: one text node each, so React adds no <!-- --> separators.
  return h('section', { id: `section-${i}`, className: 'card' },
    h('h2', null, `Section ${i}`), h('p', null, `Resolved after ${delay} ms.`));
}

function Fallback({ i }) {
  return h('section', { className: 'card' }, h('p', { className: 'skeleton' }, `Loading section ${i}…`));
}

function Deferred({ i, delay, ready }) {
  use(ready);
  return h(Section, { i, delay });
}

function Page({ delays, ready }) {
  const sections = delays.map((delay, i) => ready
    ? h(Suspense, { key: i, fallback: h(Fallback, { i }) }, h(Deferred, { i, delay, ready: ready[i] }))
    : h(Section, { key: i, i, delay }));
  return h('html', { lang: 'en' },
    h('head', null,
      h('meta', { charSet: 'utf-8' }),
      h('meta', { name: 'viewport', content: 'width=device-width, initial-scale=1' }),
      h('title', null, TITLE)),
    h('body', null, h('h1', null, TITLE), h('div', { className: 'cards' }, sections)));
}

function after(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function parseDelays(url) {
  const raw = url.searchParams.get('delays') ?? '';
  const parts = raw.split(',').filter((d) => d.trim() !== '');
  const delays = parts.map((d) => (/^\s*\d+\s*$/.test(d) ? Number(d) : NaN));
  if (delays.length < 1 || delays.length > MAX_BOUNDARIES || !delays.every((d) => d >= 0 && d <= MAX_DELAY_MS)) {
    return null;
  }
  return delays;
}

function send(res, status, type, body) {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  if (url.pathname === '/healthz') return send(res, 200, 'text/plain; charset=utf-8', 'ok\n');
  if (url.pathname !== '/page' && url.pathname !== '/plain') return send(res, 404, 'text/plain', 'not found\n');
  const delays = parseDelays(url);
  if (delays === null) return send(res, 400, 'text/plain', `delays: 1 to ${MAX_BOUNDARIES} values, each 0..${MAX_DELAY_MS} ms\n`);
  if (url.pathname === '/plain') {
    return send(res, 200, 'text/html; charset=utf-8', '<!DOCTYPE html>' + renderToString(h(Page, { delays })));
  }
  const ready = delays.map(after);
  const stream = renderToPipeableStream(h(Page, { delays, ready }), {
    onShellReady() {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-cache, no-transform' });
      stream.pipe(res);
    },
    onShellError(error) {
      send(res, 500, 'text/plain', 'shell error\n');
      console.error(error);
    },
    onError(error) {
      console.error(error);
    },
  });
  res.on('close', () => stream.abort()); // the client left: stop pending boundaries
});

server.listen(Number(process.argv[2]), '127.0.0.1');
