// Open-loop (fixed-rate) HTTPS load generator for bench/throughput.py; Node.js, no packages.
//
//   node bench/openloop.mjs '{"port": 8443, "bodies": "bodies.jsonl", "mode": "split", "rate": 1000,
//                             "duration": 15, "warmup": 2, "connections": 16}'
//
// Request i is due at t0 + i/rate, whatever happened to the requests before it (a fixed schedule, not
// "send when the previous answer arrived"). A due request goes out on an idle keep-alive TLS connection;
// when all `connections` are busy it waits in a queue. Latency is measured from the scheduled time to the
// last byte of the answer, so time spent waiting for the server (queue included) is counted: no coordinated
// omission. Also reported: the latency from the actual send (service time as the client sees it) and the
// send lag (actual send - scheduled), which includes this generator's own timer granularity (libuv timers
// have 1 ms resolution, so at 1,000/s requests leave in small batches up to ~1 ms late).
//
// Bodies and MODE as in bench/wrk_reviews.lua ("split": /mutate then /validate per body, same uid;
// "validate": twice /validate). Each pair gets a fresh uid. Prints one JSON object on stdout.
// Answers must be HTTP 200; anything else is counted in `errors`. Certificates are not verified (as wrk).

import fs from 'node:fs';
import tls from 'node:tls';

const cfg = Object.assign({host: '127.0.0.1', mode: 'split', rate: 1000, duration: 15, warmup: 2,
                           connections: 16, timeout: 10}, JSON.parse(process.argv[2] || '{}'));

const bodies = fs.readFileSync(cfg.bodies, 'latin1').split('\n').filter(Boolean).map((line) => {
  const at = line.indexOf('"uid":"') + 7;
  return [Buffer.from(line.slice(0, at), 'latin1'), Buffer.from(line.slice(at + 36), 'latin1')];
});
const nonce = Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, '0');

function requestBuffer(index) {
  const pair = Math.floor(index / 2);
  const [prefix, suffix] = bodies[pair % bodies.length];
  const path = cfg.mode === 'split' && index % 2 === 0 ? '/mutate' : '/validate';
  const uid = Buffer.from(`${nonce}-0000-4000-8000-${pair.toString(16).padStart(12, '0')}`, 'latin1');
  const length = prefix.length + uid.length + suffix.length;
  const head = Buffer.from(`POST ${path} HTTP/1.1\r\nHost: ${cfg.host}:${cfg.port}\r\n` +
                           `Content-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`, 'latin1');
  return Buffer.concat([head, prefix, uid, suffix]);
}

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms

const interval = 1000 / cfg.rate;
const warmupCount = Math.round(cfg.warmup * cfg.rate);
const total = warmupCount + Math.round(cfg.duration * cfg.rate);
const fromSchedule = [];
const fromSend = [];
const lags = [];
let errors = 0;
let completed = 0;
let maxQueue = 0;
let firstMeasured = null;
let lastMeasured = null;

class Connection {
  constructor() {
    this.busy = false;
    this.pending = null;
    this.buffer = Buffer.alloc(0);
    this.ready = new Promise((resolve, reject) => {
      this.socket = tls.connect({host: cfg.host, port: cfg.port, rejectUnauthorized: false,
                                 servername: 'localhost'}, resolve);
      this.socket.once('error', reject);
    });
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk) => this.onData(chunk));
    this.socket.on('error', () => this.fail());
    this.socket.on('close', () => this.fail());
  }

  send(job) {
    this.busy = true;
    this.pending = job;
    job.sent = now();
    this.socket.write(requestBuffer(job.index));
  }

  fail() {
    if (this.pending) {
      errors += 1;
      this.pending = null;
    }
    this.dead = true;
  }

  onData(chunk) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    for (;;) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buffer.subarray(0, end).toString('latin1');
      const match = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      if (!match) { this.socket.destroy(); this.fail(); return; }
      const size = end + 4 + Number(match[1]);
      if (this.buffer.length < size) return;
      const status = Number(head.slice(9, 12));
      this.buffer = this.buffer.subarray(size);
      this.complete(status);
    }
  }

  complete(status) {
    const job = this.pending;
    this.pending = null;
    this.busy = false;
    if (job) {
      const done = now();
      completed += 1;
      if (status !== 200) errors += 1;
      if (job.index >= warmupCount) {
        fromSchedule.push(done - job.due);
        fromSend.push(done - job.sent);
        lags.push(job.sent - job.due);
        if (firstMeasured === null) firstMeasured = job.due;
        lastMeasured = done;
      }
    }
    dispatch();
  }
}

const queue = [];
let connections = [];
let nextIndex = 0;
let t0 = 0;

function dispatch() {
  while (queue.length) {
    const idle = connections.find((c) => !c.busy && !c.dead);
    if (!idle) break;
    idle.send(queue.shift());
  }
  // rotate so that the connections take turns (the server sees all of them busy, as from the API server)
  if (connections.length > 1) connections.push(connections.shift());
}

function tick() {
  const t = now();
  while (nextIndex < total && t0 + nextIndex * interval <= t) {
    queue.push({index: nextIndex, due: t0 + nextIndex * interval});
    nextIndex += 1;
  }
  if (queue.length > maxQueue) maxQueue = queue.length;
  dispatch();
  if (nextIndex < total) {
    const wait = t0 + nextIndex * interval - now();
    setTimeout(tick, Math.max(0, wait));
  } else {
    finish();
  }
}

function percentile(sorted, fraction) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.round(fraction * (sorted.length - 1)))];
}

function summary(values) {
  const sorted = Float64Array.from(values).sort();
  const r = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
  return {p50_ms: r(percentile(sorted, 0.5)), p90_ms: r(percentile(sorted, 0.9)),
          p99_ms: r(percentile(sorted, 0.99)), p999_ms: r(percentile(sorted, 0.999)),
          max_ms: r(sorted.length ? sorted[sorted.length - 1] : null)};
}

function finish() {
  const deadline = now() + cfg.timeout * 1000;
  const wait = () => {
    const outstanding = queue.length + connections.filter((c) => c.pending).length;
    if (outstanding && now() < deadline) { setTimeout(wait, 5); return; }
    const measured = fromSchedule.length;
    const elapsed = (lastMeasured - firstMeasured) / 1000;
    const result = {
      offered_rps: cfg.rate, connections: cfg.connections, duration_s: cfg.duration,
      scheduled: total - warmupCount, completed: measured, errors: errors, unanswered: outstanding,
      achieved_rps: measured && elapsed > 0 ? Math.round(measured / elapsed) : 0, max_queue: maxQueue,
      latency_from_schedule: summary(fromSchedule), latency_from_send: summary(fromSend), send_lag: summary(lags),
    };
    process.stdout.write(JSON.stringify(result) + '\n');
    for (const c of connections) c.socket.destroy();
    process.exit(0);
  };
  wait();
}

async function main() {
  connections = Array.from({length: cfg.connections}, () => new Connection());
  await Promise.all(connections.map((c) => c.ready));
  t0 = now() + 5;
  setTimeout(tick, 5);
}

main().catch((error) => {
  process.stderr.write(`openloop: ${error.stack || error}\n`);
  process.exit(1);
});
