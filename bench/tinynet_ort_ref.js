#!/usr/bin/env node
// ONNX Runtime reference timings for bench/tinynet_compare.py.
//
// Runs the TinyNet models that `tinynet_torch_ref.py --export-onnx DIR`
// wrote (same PyTorch module and random weights as the PyTorch reference)
// with the npm package onnxruntime-node on the CPU execution provider,
// all graph optimisations, sequential execution, intra-op threads = THREADS.
//
// One measurement per line of standard input, the protocol of
// `tinynet_bench --serve`:
//   in:  VARIANT BATCH THREADS SECONDS MIN_ROUNDS
//   out: ok WALL_MS CPU_MS ROUNDS (medians per batch; CPU is process CPU
//        time, all threads) or "error MESSAGE"
//
// Usage: node bench/tinynet_ort_ref.js DIR
// onnxruntime-node is found through NODE_PATH (the driver points it at
// bench/ort/node_modules); without it the script says so and exits 3.
'use strict';

let ort;
try {
  ort = require('onnxruntime-node');
} catch (e) {
  console.log('error onnxruntime-node not installed (cd bench/ort && ' +
              'ONNXRUNTIME_NODE_INSTALL=skip npm install)');
  process.exit(3);
}
const path = require('path');
const readline = require('readline');

const RES = {a: 192, b: 188, c: 184, d: 152, e: 106};
const dir = process.argv[2] || '.';
const sessions = new Map();

function nowMs() { return Number(process.hrtime.bigint()) / 1e6; }
function cpuMs() { const u = process.cpuUsage(); return (u.user + u.system) / 1e3; }
function median(v) {
  const s = v.slice().sort((x, y) => x - y), n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

async function sessionOf(v, threads) {
  const key = v + threads;
  if (!sessions.has(key)) {
    sessions.set(key, await ort.InferenceSession.create(
        path.join(dir, 'tinynet_' + v + '.onnx'), {
          executionProviders: ['cpu'],
          graphOptimizationLevel: 'all',
          executionMode: 'sequential',
          intraOpNumThreads: threads,
          interOpNumThreads: 1,
        }));
  }
  return sessions.get(key);
}

async function measure(line) {
  const f = line.trim().split(/\s+/);
  const v = f[0], n = +f[1], threads = +f[2], budget = +f[3], minRounds = +f[4];
  if (f.length !== 5 || !(v in RES) || !(n >= 1) || !(threads >= 1) ||
      !(budget >= 0) || !(minRounds >= 1))
    return 'error bad request (VARIANT BATCH THREADS SECONDS MIN_ROUNDS)';
  const s = await sessionOf(v, threads);
  const size = n * 3 * RES[v] * RES[v];
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = Math.random() * 2 - 1;
  const feeds = {};
  feeds[s.inputNames[0]] = new ort.Tensor('float32', data, [n, 3, RES[v], RES[v]]);
  await s.run(feeds); // warm-up
  let t0 = nowMs();
  await s.run(feeds);
  const probe = (nowMs() - t0) / 1e3;
  const rounds = Math.max(minRounds, Math.min(500, Math.floor(budget / Math.max(probe, 1e-6))));
  const wall = [], cpu = [];
  for (let r = 0; r < rounds; r++) {
    const c0 = cpuMs();
    t0 = nowMs();
    await s.run(feeds);
    wall.push(nowMs() - t0);
    cpu.push(cpuMs() - c0);
  }
  return 'ok ' + median(wall).toFixed(4) + ' ' + median(cpu).toFixed(4) + ' ' + rounds;
}

// Requests are answered one at a time, in order.
const rl = readline.createInterface({input: process.stdin});
let chain = Promise.resolve();
rl.on('line', (line) => {
  chain = chain.then(() => measure(line))
      .catch((e) => 'error ' + String(e.message || e).replace(/\s+/g, ' '))
      .then((out) => { process.stdout.write(out + '\n'); });
});
