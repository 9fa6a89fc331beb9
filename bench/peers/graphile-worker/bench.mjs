// Peer benchmark: graphile-worker beside `flowpilot bench`, on the same local
// PostgreSQL. Not part of CI; see README.md.
//
// Measures, with no-op tasks:
//   1. throughput: JOBS jobs queued ahead in one `graphile_worker.add_jobs`
//      call, then a runner with CONCURRENCY workers is started and timed
//      until all have completed (counted on the runner's `job:complete`
//      event, emitted after the job row is deleted) -> jobs/s;
//   2. latency add -> start on the idle runner: SAMPLES jobs added one at a
//      time, each awaited to completion before the next; the time from just
//      before `addJob` to the task function starting -> p50, p99 (ms).
//
// Env: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/gw_bench;
// the database must exist), JOBS (30000), CONCURRENCY (8), SAMPLES (200).
// Jobs of other task identifiers in the database are left alone.

import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { Logger, makeWorkerUtils, run } from "graphile-worker";

const connectionString =
  process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/gw_bench";
const JOBS = Number(process.env.JOBS ?? 30000);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 8);
const SAMPLES = Number(process.env.SAMPLES ?? 200);
const NOOP = "bench_noop";
const PROBE = "bench_probe";

const { version } = createRequire(import.meta.url)("graphile-worker/package.json");

// Only warnings and errors: the per-job info line would cost more than the job.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
});

// Same definition as `flowpilot bench`: nearest rank.
const percentile = (sorted, share) =>
  sorted[Math.min(sorted.length, Math.max(1, Math.ceil(sorted.length * share))) - 1];

// Migrate, and clear jobs a previous (interrupted) run left behind.
const utils = await makeWorkerUtils({ connectionString, logger });
await utils.migrate();
await utils.withPgClient((c) =>
  c.query(
    `select graphile_worker.complete_jobs(array(
       select id from graphile_worker.jobs where task_identifier = any($1::text[])))`,
    [[NOOP, PROBE]],
  ),
);

// 1. Throughput.
await utils.withPgClient((c) =>
  c.query(
    `select count(*) from graphile_worker.add_jobs(array(
       select row($1, null, null, null, null, null, null, null)::graphile_worker.job_spec
       from generate_series(1, $2::int)))`,
    [NOOP, JOBS],
  ),
);

let completed = 0;
let failed = 0;
let onDrained;
const drained = new Promise((resolve) => (onDrained = resolve));
let onProbeStart = () => {};
// Our own emitter, listened to before `run()` can start any job.
const events = new EventEmitter();
events.on("job:complete", ({ job, error }) => {
  if (job.task_identifier !== NOOP) return;
  if (error) failed++;
  if (++completed === JOBS) onDrained();
});

const t0 = performance.now();
const runner = await run({
  connectionString,
  concurrency: CONCURRENCY,
  noHandleSignals: true,
  logger,
  events,
  taskList: {
    [NOOP]: async () => {},
    [PROBE]: async () => onProbeStart(performance.now()),
  },
});
await drained;
const seconds = (performance.now() - t0) / 1000;
if (failed) throw new Error(`${failed} no-op jobs failed`);

console.log(`graphile-worker ${version}, concurrency ${CONCURRENCY}, ${connectionString}`);
console.log(`throughput: ${JOBS} jobs in ${seconds.toFixed(2)} s = ${(JOBS / seconds).toFixed(0)} jobs/s`);

// 2. Latency add -> start, one job at a time on the now idle runner.
const waits = [];
for (let i = 0; i < SAMPLES; i++) {
  const started = new Promise((resolve) => (onProbeStart = resolve));
  const done = new Promise((resolve) => events.once("job:complete", resolve));
  const before = performance.now();
  await runner.addJob(PROBE, {});
  waits.push((await started) - before);
  await done;
}
waits.sort((a, b) => a - b);
console.log(
  `latency add->start: ${SAMPLES} samples, p50 ${percentile(waits, 0.5).toFixed(2)} ms, p99 ${percentile(waits, 0.99).toFixed(2)} ms`,
);

await runner.stop();
await utils.release();
