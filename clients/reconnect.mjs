// The stock graphql-ws client (pinned in package.json) against real `flowpilot serve`
// processes, written the way the README's "Live dashboards" tells dashboards to:
//
// - an execution's subscription keeps its variables in a mutable object, raises `afterSeq`
//   to each event's `seq` and drops anything at or below it, so graphql-ws's retries (which
//   re-send the same payload object) resume exactly where the stream stopped;
// - `connectionParams` is a function returning a fresh token, and `shouldRetry` stops on 4403.
//
// Scenarios, each asserting that the subscriber receives seq 1..N exactly once (no repeat
// even before dropping, no gap) and ends with the terminal event:
//   1. SIGTERM of the instance the client is connected to, mid-execution, then a restart of
//      it on the same port;
//   2. SIGKILL of one of two instances mid-execution; the client's URL moves to the other;
// and two close codes as the client sees them:
//   3. an expired access token closes 4419, which graphql-ws retries: the next
//      `connectionParams` gives a fresh token and the subscription runs;
//   4. a revoked session closes 4403, on which the README's `shouldRetry` stops.
//
//   node reconnect.mjs            # env: FLOWPILOT_BIN, DATABASE_URL, REDIS_URL,
//                                 #      FLOWPILOT_REDIS_PREFIX, FLOWPILOT_JWT_SECRET,
//                                 #      FLOWPILOT_ENCRYPTION_KEY, OUT_DIR (server logs)
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const env = process.env;
for (const name of [
  'FLOWPILOT_BIN',
  'DATABASE_URL',
  'REDIS_URL',
  'FLOWPILOT_REDIS_PREFIX',
  'FLOWPILOT_JWT_SECRET',
  'FLOWPILOT_ENCRYPTION_KEY',
]) {
  if (!env[name]) {
    console.error(`reconnect: ${name} is not set`);
    process.exit(2);
  }
}
const OUT_DIR = env.OUT_DIR || '.';
const started = Date.now();
const log = (message) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${message}`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** One `flowpilot serve` process on a fixed port, which can be stopped and started again. */
class Instance {
  constructor(name, port) {
    this.name = name;
    this.port = port;
    this.process = null;
  }

  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  get ws() {
    return `ws://127.0.0.1:${this.port}/graphql/ws`;
  }

  async start() {
    const logFile = createWriteStream(join(OUT_DIR, `reconnect-${this.name}.log`), { flags: 'a' });
    this.process = spawn(env.FLOWPILOT_BIN, ['serve', '--host', '127.0.0.1', '--port', String(this.port)], {
      env: {
        PATH: env.PATH,
        DATABASE_URL: env.DATABASE_URL,
        REDIS_URL: env.REDIS_URL,
        FLOWPILOT_REDIS_PREFIX: env.FLOWPILOT_REDIS_PREFIX,
        FLOWPILOT_JWT_SECRET: env.FLOWPILOT_JWT_SECRET,
        FLOWPILOT_ENCRYPTION_KEY: env.FLOWPILOT_ENCRYPTION_KEY,
        FLOWPILOT_LOG_FORMAT: 'json',
        FLOWPILOT_LOG: 'info',
        FLOWPILOT_RATE_LIMIT_PER_IP: '0',
        FLOWPILOT_RATE_LIMIT_PER_EMAIL: '0',
        // A killed instance's executions are taken over within seconds.
        FLOWPILOT_LEASE_SECS: '3',
        FLOWPILOT_REAPER_INTERVAL_MS: '500',
        FLOWPILOT_SHUTDOWN_GRACE_MS: '1000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.process.stdout.pipe(logFile);
    this.process.stderr.pipe(logFile);
    for (let i = 0; i < 300; i += 1) {
      try {
        if ((await fetch(`${this.http}/health`)).ok) return;
      } catch {
        // not listening yet
      }
      if (this.process.exitCode !== null) throw new Error(`${this.name} exited during start-up`);
      await sleep(100);
    }
    throw new Error(`${this.name} did not answer /health`);
  }

  async stop(signal) {
    const child = this.process;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill(signal);
    await Promise.race([exited, sleep(15000)]);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  }
}

async function graphql(instance, query, variables, token) {
  const response = await fetch(`${instance.http}/graphql`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`${query.split('{')[0].trim()}: ${JSON.stringify(body.errors)}`);
  return body.data;
}

const EVENTS = `subscription Events($executionId: ID!, $afterSeq: Int) {
  executionEvents(executionId: $executionId, afterSeq: $afterSeq) { seq kind executionStatus }
}`;

/**
 * Subscribes to one execution's events the README's way and resolves with every event
 * the server delivered (before dropping) and what the subscriber kept.
 */
function followExecution({ url, token, executionId, onEvent }) {
  const variables = { executionId, afterSeq: 0 };
  const delivered = [];
  const kept = [];
  const client = createClient({
    url,
    webSocketImpl: WebSocket,
    lazy: true,
    retryAttempts: Infinity,
    retryWait: () => sleep(200),
    connectionParams: async () => ({ authorization: `Bearer ${await token()}` }),
    shouldRetry: (event) => !(event && event.code === 4403),
  });
  const done = new Promise((resolve, reject) => {
    client.subscribe(
      { query: EVENTS, variables },
      {
        next: ({ data, errors }) => {
          if (errors) return reject(new Error(JSON.stringify(errors)));
          const event = data.executionEvents;
          delivered.push(event.seq);
          if (event.seq <= variables.afterSeq) return;
          variables.afterSeq = event.seq;
          kept.push(event);
          onEvent?.(event);
        },
        error: reject,
        complete: () => resolve(),
      },
    );
  });
  return done.then(
    () => {
      client.dispose();
      return { delivered, kept };
    },
    (error) => {
      client.dispose();
      throw error;
    },
  );
}

function assertExactlyOnce(name, { delivered, kept }) {
  const expected = kept.map((_, index) => index + 1);
  const seqs = kept.map((event) => event.seq);
  const last = kept[kept.length - 1];
  const problems = [];
  if (JSON.stringify(seqs) !== JSON.stringify(expected)) problems.push(`kept ${seqs.join(',')}`);
  if (JSON.stringify(delivered) !== JSON.stringify(expected)) problems.push(`delivered ${delivered.join(',')}`);
  if (!last || !last.kind.startsWith('EXECUTION_') || last.executionStatus !== 'SUCCEEDED') {
    problems.push(`ended with ${JSON.stringify(last)}`);
  }
  if (problems.length) throw new Error(`${name}: ${problems.join('; ')}`);
  log(`ok  ${name}: seq 1..${seqs.length} exactly once, ending ${last.kind}`);
}

/** An access token like `token`, signed with the server's key, whose time ran out. */
function expired(token) {
  const [header, payload] = token.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
  const now = Math.floor(Date.now() / 1000);
  claims.iat = now - 3600;
  claims.exp = now - 60;
  const body = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const signature = createHmac('sha256', env.FLOWPILOT_JWT_SECRET).update(body).digest('base64url');
  return `${body}.${signature}`;
}

const a = new Instance('a', await freePort());
const b = new Instance('b', await freePort());
let failed = 0;
async function scenario(name, run) {
  try {
    await run();
  } catch (error) {
    failed += 1;
    log(`FAIL ${name}: ${error.stack || error}`);
  }
}

try {
  await a.start();
  await b.start();
  log(`instances on ${a.http} and ${b.http}`);

  const email = `reconnect-${Date.now()}@example.com`;
  const password = 'a long enough passphrase 7';
  const registered = await graphql(
    a,
    `mutation Register($input: RegisterInput!) { register(input: $input) { accessToken refreshToken } }`,
    { input: { email, password, displayName: 'Reconnect' } },
  );
  let accessToken = registered.register.accessToken;
  const token = async () => accessToken;
  const { createOrganization } = await graphql(
    a,
    `mutation Org($input: CreateOrganizationInput!) { createOrganization(input: $input) { id } }`,
    { input: { name: `Reconnects ${Date.now()}` } },
    accessToken,
  );
  const steps = ['a', 'b', 'c', 'd', 'e'].map((id, index, ids) => ({
    id,
    kind: 'DELAY',
    config: { ms: 500 },
    ...(index ? { needs: [ids[index - 1]] } : {}),
  }));
  const { createWorkflow } = await graphql(
    a,
    `mutation Workflow($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }`,
    { input: { organizationId: createOrganization.id, name: 'Five delays', definition: { steps } } },
    accessToken,
  );
  const run = async () =>
    (
      await graphql(
        a,
        `mutation Run($input: RunWorkflowInput!) { runWorkflow(input: $input) { id } }`,
        { input: { workflowId: createWorkflow.id, input: {} } },
        accessToken,
      )
    ).runWorkflow.id;

  await scenario('SIGTERM and restart of the instance the client is on', async () => {
    const executionId = await run();
    let stopped = false;
    const result = await followExecution({
      url: a.ws,
      token,
      executionId,
      onEvent: (event) => {
        if (event.seq === 3 && !stopped) {
          stopped = true;
          (async () => {
            log('SIGTERM to a');
            await a.stop('SIGTERM');
            await sleep(500);
            await a.start();
            log('a is back');
          })();
        }
      },
    });
    if (!stopped) throw new Error('the execution finished before the restart');
    assertExactlyOnce('SIGTERM and restart', result);
  });

  await scenario('SIGKILL of one of two instances', async () => {
    const executionId = await run();
    let target = a;
    let killed = false;
    const result = await followExecution({
      url: () => target.ws,
      token,
      executionId,
      onEvent: (event) => {
        if (event.seq === 3 && !killed) {
          killed = true;
          log('SIGKILL to a; the client moves to b');
          target = b;
          a.stop('SIGKILL');
        }
      },
    });
    if (!killed) throw new Error('the execution finished before the kill');
    assertExactlyOnce('SIGKILL of one of two instances', result);
    await a.start();
  });

  await scenario('an expired token closes 4419, and a refreshed one is taken on the retry', async () => {
    const executionId = await run();
    const tokens = [expired(accessToken), accessToken];
    const given = [];
    const closes = [];
    const client = createClient({
      url: a.ws,
      webSocketImpl: WebSocket,
      retryAttempts: 3,
      retryWait: () => sleep(100),
      connectionParams: async () => {
        const next = tokens[Math.min(given.length, tokens.length - 1)];
        given.push(next);
        return { authorization: `Bearer ${next}` };
      },
      on: { closed: (event) => closes.push(event.code) },
    });
    await new Promise((resolve, reject) => {
      client.subscribe(
        { query: EVENTS, variables: { executionId, afterSeq: 0 } },
        { next: () => {}, error: reject, complete: resolve },
      );
    });
    client.dispose();
    if (closes[0] !== 4419) throw new Error(`the first close was ${closes[0]}, not 4419`);
    if (given.length !== 2) throw new Error(`connectionParams ran ${given.length} times, not 2`);
    log('ok  an expired token closed 4419; the retry with a fresh token streamed to the end');
  });

  await scenario("a revoked session closes 4403, and the README's shouldRetry stops", async () => {
    const signedIn = await graphql(
      a,
      `mutation Login($input: LoginInput!) { login(input: $input) { ... on AuthPayload { accessToken } } }`,
      { input: { email, password } },
    );
    const revoked = signedIn.login.accessToken;
    await graphql(a, 'mutation Logout { logout }', {}, revoked);
    let attempts = 0;
    const client = createClient({
      url: a.ws,
      webSocketImpl: WebSocket,
      retryAttempts: 5,
      retryWait: () => sleep(100),
      connectionParams: async () => {
        attempts += 1;
        return { authorization: `Bearer ${revoked}` };
      },
      shouldRetry: (event) => !(event && event.code === 4403),
    });
    const error = await new Promise((resolve) => {
      client.subscribe(
        { query: '{ viewer { id } }' },
        { next: () => {}, error: resolve, complete: () => resolve(null) },
      );
    });
    client.dispose();
    if (!error || error.code !== 4403) throw new Error(`ended with ${error && error.code}, not 4403`);
    if (attempts !== 1) throw new Error(`connected ${attempts} times, not once`);
    log(`ok  a revoked session closed 4403 (${error.reason}) and the client stopped`);
  });
} finally {
  await a.stop('SIGTERM');
  await b.stop('SIGTERM');
}

log(failed ? `reconnects: ${failed} failed` : 'reconnects: every scenario passed');
process.exit(failed ? 1 : 0);
