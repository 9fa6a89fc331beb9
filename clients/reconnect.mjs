// The stock graphql-ws client (pinned in package.json), and Apollo Client over its
// GraphQLWsLink, against real `flowpilot serve` processes, written the way the README's
// "Live dashboards" tells dashboards to:
//
// - an execution's subscription keeps its variables in a mutable object, raises `afterSeq`
//   to each event's `seq` and drops anything at or below it, so graphql-ws's retries (which
//   re-send the same payload object) resume exactly where the stream stopped;
// - an organization dashboard keeps `{ org, after }` in one mutable object, sets `after` to
//   every item's `cursor`, drops an event at or below the newest seq it applied of that
//   execution, and loads what it shows on a StreamResync (INITIAL first, any other reason
//   when the stream could not resume exactly). With Apollo Client, which copies variables
//   before its links run, a link ahead of GraphQLWsLink hands graphql-ws that same object;
// - `connectionParams` is a function returning a fresh token, and `shouldRetry` stops on 4403.
//
// Scenarios 1 and 2 run four executions at once, all in flight when the server goes away;
// one is followed with `executionEvents`, which receives seq 1..N exactly once (no repeat
// even before dropping, no gap) and ends with the terminal event, and two dashboards (stock
// graphql-ws, Apollo), subscribed to `organizationExecutionEvents` before the executions
// start, receive every execution's seq 1..N exactly once, in order, before dropping too,
// the terminal event once, and no StreamResync but the first INITIAL; every resubscription
// goes over the socket with the cursor of the last item received as `after`:
//   1. SIGTERM of the instance the clients are connected to, mid-execution, then a restart
//      of it on the same port;
//   2. SIGKILL of one of two instances mid-execution; the clients' URL moves to the other;
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

import { ApolloClient, ApolloLink, InMemoryCache, gql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
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

const DASHBOARD = `subscription Dashboard($org: ID!, $after: String) {
  organizationExecutionEvents(organizationId: $org, after: $after) {
    __typename
    ... on ExecutionEvent { executionId seq kind executionStatus occurredAt cursor }
    ... on StreamResync { reason occurredAt cursor }
  }
}`;
const TERMINAL = ['EXECUTION_SUCCEEDED', 'EXECUTION_FAILED', 'EXECUTION_CANCELLED', 'EXECUTION_TIMED_OUT'];

/**
 * An organization dashboard written the README's way, with the stock graphql-ws client or
 * with Apollo Client over GraphQLWsLink. Besides what the README's code does, it records
 * every item the server delivered (before dropping), each load of the dashboard, and the
 * `after` of every subscribe message as it went over the socket, next to the cursor of the
 * last item received by then.
 */
function watchOrganization({ name, apollo, url, token, organizationId }) {
  const record = { name, delivered: [], kept: new Map(), loads: [], subscribes: [] };
  let lastCursor = null;
  let failure = null;
  const waiters = new Set();
  const settle = () => {
    for (const waiter of waiters) waiter();
  };
  const fail = (error) => {
    failure = error instanceof Error ? error : new Error(JSON.stringify(error));
    settle();
  };
  // The client's socket: `ws`, noting what each subscribe message carries as `after`.
  class RecordingWebSocket extends WebSocket {
    send(data, ...rest) {
      const message = JSON.parse(data);
      if (message.type === 'subscribe') {
        record.subscribes.push({ after: message.payload.variables?.after, latest: lastCursor });
      }
      return super.send(data, ...rest);
    }
  }
  const wsClient = createClient({
    url,
    webSocketImpl: RecordingWebSocket,
    lazy: true,
    retryAttempts: Infinity,
    retryWait: () => sleep(200),
    connectionParams: async () => ({ authorization: `Bearer ${await token()}` }),
    shouldRetry: (event) => !(event && event.code === 4403),
  });
  const loadDashboard = (reason) => record.loads.push(reason);
  const applyEvent = (event) => {
    const events = record.kept.get(event.executionId) ?? [];
    events.push(event);
    record.kept.set(event.executionId, events);
  };

  // The README's dashboard: one variables object for the subscription's whole life.
  const variables = { org: organizationId, after: null };
  const lastSeq = new Map(); // executionId -> the newest seq applied
  const onItem = (item) => {
    record.delivered.push(item); // (recording: every item, before dropping)
    lastCursor = item.cursor;
    queueMicrotask(settle);
    variables.after = item.cursor; // a retry resumes after this item
    if (item.__typename === 'StreamResync') {
      // INITIAL opens the stream: load what you show, then apply what follows.
      // Any other reason: the stream could not resume exactly; load it again.
      loadDashboard(item.reason);
      return;
    }
    if (item.seq <= (lastSeq.get(item.executionId) ?? 0)) return; // already applied
    lastSeq.set(item.executionId, item.seq);
    applyEvent(item);
  };

  let stop;
  if (apollo) {
    // Apollo copies the variables before its links run; this link gives GraphQLWsLink
    // (and so graphql-ws's retries) the dashboard's own object instead.
    const liveVariablesLink = new ApolloLink((operation, forward) => {
      const { liveVariables } = operation.getContext();
      if (liveVariables) operation.variables = liveVariables;
      return forward(operation);
    });
    const client = new ApolloClient({
      cache: new InMemoryCache(),
      link: ApolloLink.from([liveVariablesLink, new GraphQLWsLink(wsClient)]),
    });
    const subscription = client
      .subscribe({ query: gql(DASHBOARD), variables, context: { liveVariables: variables } })
      .subscribe({
        next: ({ data, error }) => (error ? fail(error) : onItem(data.organizationExecutionEvents)),
        error: fail,
        complete: () => fail(new Error(`${name}: the subscription completed`)),
      });
    stop = () => {
      subscription.unsubscribe();
      client.stop();
      wsClient.dispose();
    };
  } else {
    const unsubscribe = wsClient.subscribe(
      { query: DASHBOARD, variables },
      {
        next: ({ data, errors }) => (errors ? fail(errors) : onItem(data.organizationExecutionEvents)),
        error: fail,
        complete: () => fail(new Error(`${name}: the subscription completed`)),
      },
    );
    stop = () => {
      unsubscribe();
      wsClient.dispose();
    };
  }

  /** Resolves once `ready()` holds, rejects on the subscription's failure or after `ms`. */
  const until = (ready, what, ms) =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (failure) {
          waiters.delete(check);
          clearTimeout(timer);
          reject(failure);
        } else if (ready()) {
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        }
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`${name}: no ${what} within ${ms / 1000} s`));
      }, ms);
      waiters.add(check);
      check();
    });
  const finished = (id) => (record.kept.get(id) ?? []).some((event) => TERMINAL.includes(event.kind));
  return {
    record,
    stop,
    /** The stream has started (its first item arrived). */
    started: () => until(() => record.delivered.length > 0, 'first item', 15000),
    /** Every one of `executionIds` has had its terminal event. */
    finished: (executionIds) => until(() => executionIds.every(finished), 'terminal event of each execution', 60000),
    unfinished: (executionIds) => executionIds.filter((id) => !finished(id)).length,
  };
}

/** Both dashboards on `url`, once each stream has started. */
async function openDashboards({ url, token, organizationId }) {
  const dashboards = [false, true].map((apollo) =>
    watchOrganization({ name: apollo ? 'Apollo dashboard' : 'graphql-ws dashboard', apollo, url, token, organizationId }),
  );
  try {
    await Promise.all(dashboards.map((dashboard) => dashboard.started()));
  } catch (error) {
    for (const dashboard of dashboards) dashboard.stop();
    throw error;
  }
  return dashboards;
}

/**
 * Asserts that a dashboard received every one of `lastSeqs`' executions (id -> its
 * `lastEventSeq`) as seq 1..N exactly once, in order, before dropping too, ending with its
 * terminal event; that no other execution arrived with a repeat; that the only StreamResync
 * was the INITIAL first item; and that it resubscribed, each time with the cursor of the
 * last item received as `after`.
 */
function assertDashboard(scenarioName, { name, delivered, kept, loads, subscribes }, lastSeqs) {
  const problems = [];
  const resyncs = delivered.filter((item) => item.__typename === 'StreamResync').map((item) => item.reason);
  if (delivered[0]?.__typename !== 'StreamResync' || delivered[0].reason !== 'INITIAL') {
    problems.push(`first item ${JSON.stringify(delivered[0])}`);
  }
  if (resyncs.length !== 1 || JSON.stringify(loads) !== JSON.stringify(['INITIAL'])) {
    problems.push(`resyncs ${resyncs.join(',')}, loads ${loads.join(',')}`);
  }
  const deliveredSeqs = new Map();
  for (const item of delivered) {
    if (item.__typename !== 'ExecutionEvent') continue;
    deliveredSeqs.set(item.executionId, [...(deliveredSeqs.get(item.executionId) ?? []), item]);
  }
  for (const [executionId, events] of deliveredSeqs) {
    const seqs = events.map((event) => event.seq);
    if (seqs.some((seq, index) => index > 0 && seq !== seqs[index - 1] + 1)) {
      problems.push(`${executionId} delivered ${seqs.join(',')}`);
    }
  }
  for (const [executionId, lastEventSeq] of lastSeqs) {
    const expected = Array.from({ length: lastEventSeq }, (_, index) => index + 1).join(',');
    const raw = deliveredSeqs.get(executionId) ?? [];
    const applied = kept.get(executionId) ?? [];
    if (raw.map((event) => event.seq).join(',') !== expected) {
      problems.push(`${executionId} delivered ${raw.map((event) => event.seq).join(',')}, not 1..${lastEventSeq}`);
    }
    if (applied.map((event) => event.seq).join(',') !== expected) {
      problems.push(`${executionId} applied ${applied.map((event) => event.seq).join(',')}, not 1..${lastEventSeq}`);
    }
    const terminal = raw.filter((event) => TERMINAL.includes(event.kind));
    if (terminal.length !== 1 || terminal[0] !== raw[raw.length - 1] || terminal[0].executionStatus !== 'SUCCEEDED') {
      problems.push(`${executionId} terminal events ${JSON.stringify(terminal)}`);
    }
  }
  const resumed = subscribes.slice(1);
  if (!resumed.length) problems.push('never resubscribed');
  if (subscribes[0] && subscribes[0].after !== null) problems.push(`first subscribed after ${subscribes[0].after}`);
  for (const [index, { after, latest }] of resumed.entries()) {
    if (after == null || after !== latest) {
      problems.push(`resubscription ${index + 1} sent after=${after}, not the latest cursor ${latest}`);
    }
  }
  const label = `${scenarioName}, ${name}`;
  if (problems.length) throw new Error(`${label}: ${problems.join('; ')}`);
  const events = delivered.length - 1;
  log(
    `ok  ${label}: ${lastSeqs.size} executions each seq 1..N exactly once (${events} events, none repeated), ` +
      `terminal once, only the INITIAL resync; resubscribed ${resumed.length}x with the latest cursor`,
  );
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

  /** `lastEventSeq` of each execution, by id. */
  const lastEventSeqs = async (executionIds) =>
    new Map(
      await Promise.all(
        executionIds.map(async (id) => {
          const { execution } = await graphql(
            b,
            'query LastSeq($id: ID!) { execution(id: $id) { lastEventSeq } }',
            { id },
            accessToken,
          );
          return [id, execution.lastEventSeq];
        }),
      ),
    );

  /**
   * Dashboards on `url` first, then four executions at once, the first of them followed;
   * `interrupt` runs when the follower has seq 3, with the other three still running.
   */
  async function interrupted(name, { url, interrupt }) {
    const organizationId = createOrganization.id;
    const dashboards = await openDashboards({ url, token, organizationId });
    try {
      const executionIds = await Promise.all([run(), run(), run(), run()]);
      let interruption = null;
      let interruptionFailed;
      const failed = new Promise((_, reject) => {
        interruptionFailed = reject;
      });
      const result = await Promise.race([
        failed,
        followExecution({
          url,
          token,
          executionId: executionIds[0],
          onEvent: (event) => {
            if (event.seq === 3 && !interruption) {
              const unfinished = dashboards[0].unfinished(executionIds);
              interruption =
                unfinished < 2
                  ? Promise.reject(new Error(`only ${unfinished} execution(s) in flight at the interruption`))
                  : interrupt(`${unfinished} of ${executionIds.length} executions unfinished`);
              interruption.catch(interruptionFailed);
            }
          },
        }),
      ]);
      if (!interruption) throw new Error('the execution finished before the interruption');
      await interruption;
      assertExactlyOnce(`${name}, executionEvents`, result);
      await Promise.all(dashboards.map((dashboard) => dashboard.finished(executionIds)));
      const lastSeqs = await lastEventSeqs(executionIds);
      for (const dashboard of dashboards) assertDashboard(name, dashboard.record, lastSeqs);
    } finally {
      for (const dashboard of dashboards) dashboard.stop();
    }
  }

  await scenario('SIGTERM and restart of the instance the clients are on', () =>
    interrupted('SIGTERM and restart', {
      url: a.ws,
      interrupt: async (state) => {
        log(`SIGTERM to a (${state})`);
        await a.stop('SIGTERM');
        await sleep(500);
        await a.start();
        log('a is back');
      },
    }),
  );

  await scenario('SIGKILL of one of two instances', async () => {
    let target = a;
    try {
      await interrupted('SIGKILL of one of two instances', {
        url: () => target.ws,
        interrupt: async (state) => {
          log(`SIGKILL to a (${state}); the clients move to b`);
          target = b;
          await a.stop('SIGKILL');
        },
      });
    } finally {
      if (a.process.exitCode !== null || a.process.signalCode !== null) await a.start();
    }
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
