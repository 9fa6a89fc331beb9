// Peer benchmark: FlowPilot's dashboard query beside PostGraphile 4, on the
// same PostgreSQL data, driven by the same load generator. Not part of CI;
// see README.md.
//
// Seeds through FlowPilot's own API (already running, with its engine off so
// executions stay QUEUED): one account, one organization, 50 workflows of
// one TRANSFORM step, 10 runs of each. Then serves FlowPilot's database with
// PostGraphile 4 in a child process (its own event loop, not the load
// generator's; pg's default pool of 10, as FlowPilot's) and measures, one
// load after the other, the dashboard "the organization's 50 newest
// workflows, each with its active version's number and its 5 newest
// executions":
//   1. FlowPilot, written naturally: `executions(first: 5) { nodes { … } }`;
//   2. FlowPilot, with its purpose-built `recentExecutions(limit: 5)`;
//   3. PostGraphile, with the names it generates for FlowPilot's tables.
// Every load: CONNECTIONS keep-alive connections, each a loop POSTing the
// query (FlowPilot with `Authorization: Bearer`; PostGraphile needs none);
// 1 s of warm-up, then SECONDS measured. A request counts when it completes
// inside the measured window. Printed as requests/s, p50 and p99 latency in
// ms (nearest rank, as `flowpilot bench`). Any response other than 200
// without `errors` fails the run; before the loads, the three answers are
// checked once in full (50 workflows with 5 QUEUED executions each, the same
// ids in the same order).
//
// Env: FLOWPILOT_URL (default http://127.0.0.1:8088/graphql), DATABASE_URL
// (FlowPilot's database, default postgres://postgres@127.0.0.1:5432/pg_peer),
// PORT (PostGraphile's, default 5050), CONNECTIONS (32), SECONDS (10).

import { fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import http from "node:http";
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

const FLOWPILOT_URL = process.env.FLOWPILOT_URL ?? "http://127.0.0.1:8088/graphql";
const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/pg_peer";
const PORT = Number(process.env.PORT ?? 5050);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 32);
const SECONDS = Number(process.env.SECONDS ?? 10);
const WARMUP_MS = 1000;
const WORKFLOWS = 50;
const RUNS = 10;
const RECENT = 5;
const SEED_CONCURRENCY = 8;

// ---------------------------------------------------------------------------
// The queries.

const FLOWPILOT_NATURAL = `query Dashboard($id: ID!, $first: Int!) {
  organization(id: $id) {
    workflows(first: $first) {
      nodes {
        id name activeVersion { number }
        executions(first: ${RECENT}) { nodes { id status queuedAt finishedAt } }
      }
    }
  }
}`;

const FLOWPILOT_RECENT = `query Dashboard($id: ID!, $first: Int!) {
  organization(id: $id) {
    workflows(first: $first) {
      nodes {
        id name activeVersion { number }
        recentExecutions(limit: ${RECENT}) { id status queuedAt finishedAt }
      }
    }
  }
}`;

// FlowPilot's `workflows` lists those not archived, newest first.
const POSTGRAPHILE = `query Dashboard($id: UUID!, $first: Int!) {
  organizationById(id: $id) {
    workflowsByOrganizationId(first: $first, orderBy: CREATED_AT_DESC, condition: { archivedAt: null }) {
      nodes {
        id name workflowVersionByActiveVersionId { number }
        executionsByWorkflowId(first: ${RECENT}, orderBy: QUEUED_AT_DESC) { nodes { id status queuedAt finishedAt } }
      }
    }
  }
}`;

// The three answers in one shape: [{ id, name, version, executions: [{…}] }],
// times as epoch milliseconds (the servers format them differently).
const execution = (e) => ({
  id: e.id,
  status: e.status,
  queuedAt: Date.parse(e.queuedAt),
  finishedAt: e.finishedAt && Date.parse(e.finishedAt),
});
const flowpilotNatural = (data) =>
  data.organization.workflows.nodes.map((w) => ({
    id: w.id,
    name: w.name,
    version: w.activeVersion.number,
    executions: w.executions.nodes.map(execution),
  }));
const flowpilotRecent = (data) =>
  data.organization.workflows.nodes.map((w) => ({
    id: w.id,
    name: w.name,
    version: w.activeVersion.number,
    executions: w.recentExecutions.map(execution),
  }));
const postgraphileShape = (data) =>
  data.organizationById.workflowsByOrganizationId.nodes.map((w) => ({
    id: w.id,
    name: w.name,
    version: w.workflowVersionByActiveVersionId?.number,
    executions: w.executionsByWorkflowId.nodes.map(execution),
  }));

// ---------------------------------------------------------------------------
// HTTP.

// POSTs `body` (a string) and resolves to { status, text }.
function post(url, body, { agent, token } = {}) {
  return new Promise((resolve, reject) => {
    const headers = {
      "content-type": "application/json",
      accept: "application/json",
      "content-length": Buffer.byteLength(body),
    };
    if (token) headers.authorization = `Bearer ${token}`;
    const req = http.request(url, { method: "POST", agent, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

// One GraphQL operation, checked in full: 200, parsed, no `errors`.
async function graphql(url, query, variables, token) {
  const { status, text } = await post(url, JSON.stringify({ query, variables }), { token });
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${url}: HTTP ${status}, not JSON: ${text.slice(0, 500)}`);
  }
  if (status !== 200 || json.errors) {
    throw new Error(`${url}: HTTP ${status}: ${JSON.stringify(json.errors ?? json).slice(0, 1000)}`);
  }
  return json.data;
}

// Runs `fn` over `items`, at most `limit` at a time.
async function inParallel(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

// Same definition as `flowpilot bench`: nearest rank.
const percentile = (sorted, share) =>
  sorted[Math.min(sorted.length, Math.max(1, Math.ceil(sorted.length * share))) - 1];

// CONNECTIONS keep-alive loops POSTing `body` to `url` for WARMUP_MS + SECONDS.
async function load(url, body, token) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const latencies = [];
  let measuring = false;
  let stopped = false;
  let failure;
  const loop = async () => {
    while (!stopped) {
      const t0 = performance.now();
      const { status, text } = await post(url, body, { agent, token });
      const ms = performance.now() - t0;
      // Cheap enough not to make the load generator the bottleneck; the
      // answers were checked in full up front. No workflow name or other
      // string in these answers contains `"errors":`.
      if (status !== 200 || !text.startsWith('{"data":{') || text.includes('"errors":')) {
        throw new Error(`${url}: HTTP ${status}: ${text.slice(0, 1000)}`);
      }
      if (measuring) latencies.push(ms);
    }
  };
  const loops = Array.from({ length: CONNECTIONS }, () =>
    loop().catch((e) => {
      failure ??= e;
      stopped = true;
    }),
  );
  await sleep(WARMUP_MS);
  measuring = true;
  const t0 = performance.now();
  await sleep(SECONDS * 1000);
  measuring = false;
  const seconds = (performance.now() - t0) / 1000;
  stopped = true;
  await Promise.all(loops);
  agent.destroy();
  if (failure) throw failure;
  latencies.sort((a, b) => a - b);
  return {
    requests: latencies.length,
    perSecond: latencies.length / seconds,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
  };
}

// ---------------------------------------------------------------------------
// PostGraphile, in the child process (`node bench.mjs postgraphile`).

async function servePostgraphile() {
  // The CommonJS exports object: Node's named-export detection misses
  // those re-exported from graphile-utils.
  const { postgraphile, makeJSONPgSmartTagsPlugin } = (await import("postgraphile")).default;
  // FlowPilot's `workflows.active_version_id` has no foreign key (the two
  // tables point at each other), so PostGraphile would not see the relation.
  // This smart tag, applied in this process only (no `COMMENT ON`, nothing
  // in the database changes), declares it as the FK it would be.
  const activeVersionRelation = makeJSONPgSmartTagsPlugin({
    version: 1,
    config: {
      class: {
        "public.workflows": {
          tags: { foreignKey: "(active_version_id) references workflow_versions (id)" },
        },
      },
    },
  });
  const middleware = postgraphile(DATABASE_URL, "public", {
    appendPlugins: [activeVersionRelation],
    graphiql: false,
    disableQueryLog: true,
    watchPg: false,
    dynamicJson: true,
    setofFunctionsContainNulls: false,
    ignoreRBAC: false,
    disableDefaultMutations: true,
    legacyRelations: "omit",
    retryOnInitFail: false,
  });
  const server = http.createServer(middleware);
  server.keepAliveTimeout = 60_000;
  server.listen(PORT, "127.0.0.1", () => process.send?.({ listening: PORT }));
  process.on("disconnect", () => process.exit(0));
}

// ---------------------------------------------------------------------------

async function main() {
  const { version } = createRequire(import.meta.url)("postgraphile/package.json");

  // Seed through FlowPilot's API. One registration (registration is rate
  // limited per IP); a fresh address each run, so runs can share a database.
  const stamp = randomUUID().slice(0, 8);
  const t0 = performance.now();
  const registered = await graphql(
    FLOWPILOT_URL,
    `mutation Register($input: RegisterInput!) { register(input: $input) { accessToken refreshToken } }`,
    {
      input: {
        email: `bench-${stamp}@example.com`,
        password: "peer benchmark password",
        displayName: "PostGraphile peer bench",
      },
    },
  );
  let { accessToken, refreshToken } = registered.register;
  const { createOrganization: org } = await graphql(
    FLOWPILOT_URL,
    `mutation CreateOrganization($input: CreateOrganizationInput!) { createOrganization(input: $input) { id } }`,
    { input: { name: `PostGraphile peer ${stamp}` } },
    accessToken,
  );
  // One at a time, so every `created_at` differs and both servers' orders
  // are fully determined.
  const workflowIds = [];
  for (let i = 1; i <= WORKFLOWS; i++) {
    const { createWorkflow } = await graphql(
      FLOWPILOT_URL,
      `mutation CreateWorkflow($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }`,
      {
        input: {
          organizationId: org.id,
          name: `workflow ${String(i).padStart(2, "0")}`,
          definition: { steps: [{ id: "a", kind: "TRANSFORM", config: { output: 1 } }] },
        },
      },
      accessToken,
    );
    workflowIds.push(createWorkflow.id);
  }
  // SEED_CONCURRENCY workflows at a time, each one's runs one after another
  // (so its `queued_at` differ too).
  await inParallel(workflowIds, SEED_CONCURRENCY, async (workflowId) => {
    for (let r = 0; r < RUNS; r++) {
      await graphql(
        FLOWPILOT_URL,
        `mutation RunWorkflow($input: RunWorkflowInput!) { runWorkflow(input: $input) { id } }`,
        { input: { workflowId } },
        accessToken,
      );
    }
  });
  console.error(
    `seeded organization ${org.id}: ${WORKFLOWS} workflows, ${WORKFLOWS * RUNS} executions in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );

  // PostGraphile in a child process.
  const child = fork(fileURLToPath(import.meta.url), ["postgraphile"], {
    env: { ...process.env, NODE_ENV: "production" },
  });
  try {
    await new Promise((resolve, reject) => {
      child.once("message", resolve);
      child.once("exit", (code) => reject(new Error(`PostGraphile exited with code ${code}`)));
    });
    const POSTGRAPHILE_URL = `http://127.0.0.1:${PORT}/graphql`;

    // Check the three answers once, in full.
    const variables = { id: org.id, first: WORKFLOWS };
    const answers = {
      natural: flowpilotNatural(await graphql(FLOWPILOT_URL, FLOWPILOT_NATURAL, variables, accessToken)),
      recent: flowpilotRecent(await graphql(FLOWPILOT_URL, FLOWPILOT_RECENT, variables, accessToken)),
      postgraphile: postgraphileShape(await graphql(POSTGRAPHILE_URL, POSTGRAPHILE, variables)),
    };
    for (const [name, workflows] of Object.entries(answers)) {
      if (workflows.length !== WORKFLOWS || workflows.some((w) => w.executions.length !== RECENT || w.version !== 1)) {
        throw new Error(`${name}: expected ${WORKFLOWS} workflows of version 1 with ${RECENT} executions each`);
      }
    }
    // A running engine would change the data, and load the server, under the benchmark.
    if (answers.natural.some((w) => w.executions.some((e) => e.status !== "QUEUED"))) {
      throw new Error("executions were run: start FlowPilot with FLOWPILOT_WORKERS=0 (or FLOWPILOT_RUN_ENGINE=false)");
    }
    const expected = JSON.stringify(answers.natural);
    for (const name of ["recent", "postgraphile"]) {
      if (JSON.stringify(answers[name]) !== expected) {
        throw new Error(`${name} answers other workflows or executions than the natural FlowPilot query`);
      }
    }

    const loads = [
      ["FlowPilot, `executions(first: 5)`", FLOWPILOT_URL, FLOWPILOT_NATURAL, true],
      ["FlowPilot, `recentExecutions(limit: 5)`", FLOWPILOT_URL, FLOWPILOT_RECENT, true],
      [`PostGraphile ${version}`, POSTGRAPHILE_URL, POSTGRAPHILE, false],
    ];
    const rows = [];
    for (const [name, url, query, auth] of loads) {
      if (auth) {
        // A fresh access token (they last 15 minutes) for each load.
        const { refreshSession } = await graphql(
          FLOWPILOT_URL,
          `mutation Refresh($input: RefreshSessionInput!) { refreshSession(input: $input) { accessToken refreshToken } }`,
          { input: { refreshToken } },
        );
        ({ accessToken, refreshToken } = refreshSession);
      }
      const result = await load(url, JSON.stringify({ query, variables }), auth ? accessToken : undefined);
      console.error(`${name}: ${result.requests} requests`);
      rows.push(
        `| ${name} | ${result.perSecond.toFixed(0)} | ${result.p50.toFixed(2)} | ${result.p99.toFixed(2)} |`,
      );
    }

    console.log(
      `${CONNECTIONS} connections, ${SECONDS} s after 1 s of warm-up; ${WORKFLOWS} workflows x ${RECENT} of ${RUNS} executions; ${DATABASE_URL}`,
    );
    console.log("");
    console.log("| server, query | requests/s | p50 ms | p99 ms |");
    console.log("|---|---:|---:|---:|");
    for (const row of rows) console.log(row);
  } finally {
    child.kill();
  }
}

if (process.argv[2] === "postgraphile") await servePostgraphile();
else await main();
