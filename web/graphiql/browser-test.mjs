#!/usr/bin/env node
// Headless-browser test of the GraphiQL page a FlowPilot server serves at
// GET /graphql:
//
//   node browser-test.mjs http://127.0.0.1:8000
//
// Runs the system Chromium (/usr/bin/chromium, or $CHROMIUM_PATH) through
// playwright-core; it never downloads a browser. Checks that the page works
// offline under its Content-Security-Policy (no request leaves the server's
// origin, no CSP violation, no page error), that a query runs with the
// Authorization header typed into GraphiQL, that the headers carry over to a
// new GraphiQL tab and across a reload, and that a subscription streams an
// execution's events over the WebSocket until it finishes.
// Exits 0 when every check passes, 1 otherwise.

import { chromium } from 'playwright-core';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const started = performance.now();
const seconds = (from = started) => `${((performance.now() - from) / 1000).toFixed(2)}s`;

class TestFailure extends Error {}
const fail = (message) => {
  throw new TestFailure(message);
};

// ------------------------------------------------------------------ arguments

const baseArg = process.argv[2];
if (!baseArg || process.argv.length > 3 || baseArg.startsWith('-')) {
  console.error('usage: node browser-test.mjs <baseUrl>   (e.g. http://127.0.0.1:8000)');
  process.exit(2);
}
let base;
try {
  base = new URL(baseArg);
} catch {
  console.error(`browser-test: not a URL: ${baseArg}`);
  process.exit(2);
}
const origin = base.origin;
const graphqlUrl = `${origin}/graphql`;
const chromiumPath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const timeoutMs = Number(process.env.BROWSER_TEST_TIMEOUT_MS || 20000);

// ------------------------------------------------------------------ reporting

const passed = [];
function ok(what, since) {
  passed.push(what);
  console.log(`  ok  ${what}${since ? ` (${seconds(since)})` : ''}`);
}

// ------------------------------------------------------------------ API

async function gql(query, variables, token) {
  const headers = { 'content-type': 'application/json', accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(graphqlUrl, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  } catch (err) {
    fail(`POST ${graphqlUrl} failed: ${err.cause?.message || err.message} (is the server running?)`);
  }
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    fail(`POST ${graphqlUrl}: HTTP ${res.status}, not JSON: ${text.slice(0, 300)}`);
  }
  if (body.errors?.length) fail(`API error: ${JSON.stringify(body.errors).slice(0, 500)}\n  for: ${query.trim().split('\n')[0]}`);
  return body.data;
}

async function setUpThroughApi() {
  const t = performance.now();
  const email = `graphiql-${Date.now()}-${randomBytes(4).toString('hex')}@example.com`;
  const { register } = await gql(
    `mutation Register($input: RegisterInput!) {
       register(input: $input) { accessToken user { id email } }
     }`,
    { input: { email, password: `browser test ${randomBytes(8).toString('hex')}`, displayName: 'GraphiQL Test' } },
  );
  const token = register.accessToken;
  if (!token) fail('register returned no accessToken');
  ok(`registered ${register.user.email} through the API`, t);

  const t2 = performance.now();
  const { createOrganization } = await gql(
    `mutation Org($input: CreateOrganizationInput!) { createOrganization(input: $input) { id } }`,
    { input: { name: `GraphiQL test ${randomBytes(3).toString('hex')}` } },
    token,
  );
  const { createWorkflow } = await gql(
    `mutation Wf($input: CreateWorkflowInput!) { createWorkflow(input: $input) { id } }`,
    {
      input: {
        organizationId: createOrganization.id,
        name: 'GraphiQL subscription test',
        definition: {
          steps: [
            { id: 'pause', kind: 'DELAY', config: { ms: 800 } },
            { id: 'report', kind: 'TRANSFORM', needs: ['pause'], config: { output: { n: '{{ input.n * 2 }}' } } },
          ],
        },
      },
    },
    token,
  );
  ok('created an organization and a workflow (DELAY 800 ms, then TRANSFORM)', t2);
  return { email: register.user.email, token, workflowId: createWorkflow.id };
}

// ------------------------------------------------------------------ page helpers

const QUERY_EDITOR = '.graphiql-query-editor .CodeMirror';
const HEADER_EDITOR = '.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror';
const RESULT_EDITOR = '.result-window .CodeMirror';

async function waitForGraphiql(page) {
  await page.waitForSelector('.graphiql-container', { timeout: timeoutMs });
  await page.waitForSelector(QUERY_EDITOR, { timeout: timeoutMs });
  await page.waitForSelector(RESULT_EDITOR, { state: 'attached', timeout: timeoutMs });
}

async function showHeaders(page) {
  await page.click('.graphiql-editor-tools button[data-name="headers"]');
  await page.waitForSelector(HEADER_EDITOR, { timeout: timeoutMs });
}

const editorValue = (page, selector) =>
  page.evaluate((sel) => document.querySelector(sel).CodeMirror.getValue(), selector);
const setEditorValue = (page, selector, value) =>
  page.evaluate(([sel, v]) => document.querySelector(sel).CodeMirror.setValue(v), [selector, value]);

async function headersShown(page) {
  await showHeaders(page);
  return editorValue(page, HEADER_EDITOR);
}

// Runs the operation in the query editor and waits until the result editor
// holds a value that `accept` takes; returns that value.
async function run(page, query, accept, what) {
  await setEditorValue(page, QUERY_EDITOR, query);
  // GraphiQL reads the operation name from the editor after a short
  // debounce; running before that would send the previous name.
  const name = /^\s*(?:query|mutation|subscription)\s+([_A-Za-z][_0-9A-Za-z]*)/.exec(query)?.[1];
  if (name) {
    await page.waitForFunction(([sel, n]) => document.querySelector(sel).CodeMirror.operationName === n, [QUERY_EDITOR, name]);
  }
  await page.click('.graphiql-execute-button');
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    last = await editorValue(page, RESULT_EDITOR);
    if (accept(last)) return last;
    await page.waitForTimeout(50);
  }
  fail(`${what}: the result pane did not show the expected result in ${timeoutMs} ms; it shows:\n${last.slice(0, 1000)}`);
}

// GraphiQL stores its tab and header state with a 500 ms debounce.
const letGraphiqlPersist = (page) => page.waitForTimeout(700);

// ------------------------------------------------------------------ test

async function main() {
  console.log(`FlowPilot GraphiQL browser test against ${origin}`);
  const api = await setUpThroughApi();

  const foreignRequests = [];
  const cspViolations = [];
  const pageErrors = [];
  const otherConsoleErrors = [];
  const failedAssets = [];
  const webSockets = [];

  const tLaunch = performance.now();
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  ok(`launched ${chromiumPath} (Chromium ${browser.version()})`, tLaunch);

  try {
    const context = await browser.newContext();
    // Nothing may leave the server's origin: such requests are aborted and
    // make the test fail.
    await context.route('**/*', (route) => {
      const url = route.request().url();
      let sameOrigin = false;
      try {
        sameOrigin = new URL(url).origin === origin;
      } catch {
        /* not a URL with an origin */
      }
      if (sameOrigin) return route.continue();
      foreignRequests.push(`${route.request().method()} ${url}`);
      return route.abort('blockedbyclient');
    });
    const wsOrigin = origin.replace(/^http/, 'ws');
    await context.routeWebSocket(
      (url) => url.origin !== wsOrigin,
      (ws) => {
        foreignRequests.push(`WebSocket ${ws.url()}`);
        ws.close();
      },
    );

    const page = await context.newPage();
    page.setDefaultTimeout(timeoutMs);
    page.on('pageerror', (err) => pageErrors.push(err.stack || String(err)));
    page.on('console', (msg) => {
      const text = msg.text();
      if (/Content Security Policy|Refused to/i.test(text)) cspViolations.push(text);
      else if (msg.type() === 'error') otherConsoleErrors.push(text);
    });
    page.on('response', (res) => {
      if (res.url().startsWith(`${origin}/graphiql/`) && res.status() >= 400) {
        failedAssets.push(`${res.status()} ${res.url()}`);
      }
    });
    const connectionInits = [];
    page.on('websocket', (ws) => {
      webSockets.push(ws.url());
      ws.on('framesent', ({ payload }) => {
        if (typeof payload === 'string' && payload.includes('"connection_init"')) connectionInits.push(payload);
      });
    });
    const graphqlPosts = [];
    page.on('request', (req) => {
      if (req.method() === 'POST' && req.url() === graphqlUrl) graphqlPosts.push(req);
    });

    // --- load the page as a browser navigation (Accept: text/html)
    let t = performance.now();
    const response = await page.goto(graphqlUrl, { waitUntil: 'load' });
    if (!response) fail(`GET ${graphqlUrl} gave no response`);
    if (response.status() !== 200) fail(`GET ${graphqlUrl} answered HTTP ${response.status()}`);
    const csp = response.headers()['content-security-policy'];
    if (!csp) fail(`GET ${graphqlUrl} (Accept: text/html) has no Content-Security-Policy header`);
    if (!csp.includes("default-src 'self'")) fail(`its Content-Security-Policy lacks default-src 'self': ${csp}`);
    ok(`GET /graphql serves the page with Content-Security-Policy: ${csp}`, t);
    await waitForGraphiql(page);
    const title = await page.title();
    if (title !== 'FlowPilot GraphiQL') fail(`page title is "${title}", expected "FlowPilot GraphiQL"`);
    ok('GraphiQL mounted, title "FlowPilot GraphiQL"', t);

    // --- headers + query
    t = performance.now();
    const headersJson = `{"Authorization": "Bearer ${api.token}"}`;
    await showHeaders(page);
    await setEditorValue(page, HEADER_EDITOR, headersJson);
    const postsBefore = graphqlPosts.length;
    await run(page, 'query Me { viewer { email } }', (v) => v.includes(api.email), 'query Me');
    const mePost = graphqlPosts.slice(postsBefore).find((r) => (r.postData() || '').includes('viewer'));
    if (!mePost) fail('no POST /graphql carried the query Me');
    if (mePost.headers().authorization !== `Bearer ${api.token}`) {
      fail(`POST /graphql for query Me carried authorization=${mePost.headers().authorization}`);
    }
    ok(`headers editor + query Me: result pane shows ${api.email} (POST /graphql with the Authorization header)`, t);

    // --- new GraphiQL tab
    t = performance.now();
    await letGraphiqlPersist(page);
    // GraphiQL shows its tab bar only from two tabs on.
    const tabCount = () => page.evaluate(() => Math.max(1, document.querySelectorAll('.graphiql-tab').length));
    const tabsBefore = await tabCount();
    await page.click('.graphiql-tab-add');
    await page.waitForFunction((n) => document.querySelectorAll('.graphiql-tab').length > n, tabsBefore);
    if (!(await page.locator('.graphiql-tab-active').count())) fail('no active GraphiQL tab after adding one');
    const inNewTab = await headersShown(page);
    if (!inNewTab.includes(`Bearer ${api.token}`)) fail(`the new GraphiQL tab's headers are:\n${inNewTab}`);
    ok(`a new GraphiQL tab starts with the same headers (${tabsBefore} -> ${await tabCount()} tabs)`, t);

    // --- reload
    t = performance.now();
    await letGraphiqlPersist(page);
    await page.reload({ waitUntil: 'load' });
    await waitForGraphiql(page);
    const afterReload = await headersShown(page);
    if (!afterReload.includes(`Bearer ${api.token}`)) fail(`after a reload the headers are:\n${afterReload}`);
    ok('after a reload the headers are still there', t);

    // --- a second browser tab of the same browser
    t = performance.now();
    const page2 = await context.newPage();
    page2.on('pageerror', (err) => pageErrors.push(err.stack || String(err)));
    page2.on('console', (msg) => {
      if (/Content Security Policy|Refused to/i.test(msg.text())) cspViolations.push(msg.text());
    });
    await page2.goto(graphqlUrl, { waitUntil: 'load' });
    await waitForGraphiql(page2);
    const inPage2 = await headersShown(page2);
    if (!inPage2.includes(`Bearer ${api.token}`)) fail(`a second browser tab shows the headers:\n${inPage2}`);
    await page2.close();
    ok('a second browser tab opens with the same headers', t);

    // --- subscription
    t = performance.now();
    const { runWorkflow } = await gql(
      `mutation Run($input: RunWorkflowInput!) { runWorkflow(input: $input) { id status } }`,
      { input: { workflowId: api.workflowId, input: { n: 21 } } },
      api.token,
    );
    const executionId = runWorkflow.id;
    // Record every value the result pane shows: GraphiQL replaces it with
    // each event as it arrives.
    await page.evaluate((sel) => {
      const cm = document.querySelector(sel).CodeMirror;
      window.__flowpilotResults = [];
      cm.on('change', () => window.__flowpilotResults.push({ at: performance.now(), text: cm.getValue() }));
    }, RESULT_EDITOR);
    const subscription = `subscription Watch {
  executionEvents(executionId: "${executionId}", afterSeq: 0) {
    seq kind executionStatus stepId stepStatus stepOutput occurredAt
    execution { status output }
  }
}`;
    await run(
      page,
      subscription,
      (v) => /"kind":\s*"EXECUTION_SUCCEEDED"/.test(v),
      'subscription executionEvents',
    );
    // The subscription completes after the terminal event: the execute
    // button turns back from "stop" to "run".
    await page.waitForFunction(
      () => !document.querySelector('.graphiql-execute-button')?.getAttribute('aria-label')?.match(/stop/i),
      null,
      { timeout: timeoutMs },
    ).catch(() => fail('the subscription did not complete after the execution finished'));
    const shown = await page.evaluate(() => window.__flowpilotResults);
    const events = [];
    for (const { at, text } of shown) {
      if (!text.trim()) continue;
      let parsed;
      try {
        parsed = JSON.parse(text);
      } catch {
        fail(`the result pane showed something that is not JSON:\n${text.slice(0, 500)}`);
      }
      if (parsed.errors) fail(`the subscription answered errors:\n${text.slice(0, 1000)}`);
      const event = parsed.data?.executionEvents;
      if (event && events.at(-1)?.seq !== event.seq) events.push({ ...event, at });
    }
    const seqs = events.map((e) => e.seq);
    const expectedSeqs = Array.from({ length: seqs.length }, (_, i) => i + 1);
    if (JSON.stringify(seqs) !== JSON.stringify(expectedSeqs)) {
      fail(`events arrived out of order or with gaps: seq ${seqs.join(', ')}`);
    }
    const last = events.at(-1);
    if (!last || last.kind !== 'EXECUTION_SUCCEEDED' || last.executionStatus !== 'SUCCEEDED') {
      fail(`the last event is not EXECUTION_SUCCEEDED/SUCCEEDED: ${JSON.stringify(last)}`);
    }
    const kinds = events.map((e) => e.kind);
    for (const kind of ['STEP_SUCCEEDED', 'EXECUTION_SUCCEEDED']) {
      if (!kinds.includes(kind)) fail(`no ${kind} event among ${kinds.join(', ')}`);
    }
    const wsUrl = `${wsOrigin}/graphql/ws`;
    if (!webSockets.includes(wsUrl)) fail(`no WebSocket to ${wsUrl}; seen: ${webSockets.join(', ') || 'none'}`);
    const authorized = connectionInits.some((frame) => {
      try {
        return JSON.parse(frame).payload?.authorization === `Bearer ${api.token}`;
      } catch {
        return false;
      }
    });
    if (!authorized) {
      fail(`no connection_init carried {"authorization": "Bearer <token>"}; sent: ${connectionInits.join(' | ') || 'none'}`);
    }
    const spread = events.length > 1 ? Math.round(last.at - events[0].at) : 0;
    ok(
      `subscription over ${wsUrl} (token in connection_init): ${events.length} events in the result pane over ${spread} ms ` +
        `(${kinds.join(' > ')}), ending SUCCEEDED`,
      t,
    );

    // --- schema (introspection through the page's fetcher) and the dialogs,
    // whose scroll lock would otherwise add a <style> element refused by CSP
    t = performance.now();
    await page.click('.graphiql-sidebar button[aria-label="Show Documentation Explorer"]');
    await page.waitForFunction(
      () => /subscription:\s*Subscription/i.test(document.querySelector('.graphiql-doc-explorer')?.textContent || ''),
      null,
      { timeout: timeoutMs },
    ).catch(() => fail('the documentation explorer did not show the schema (introspection failed?)'));
    for (const label of ['Open short keys dialog', 'Open settings dialog']) {
      await page.click(`.graphiql-sidebar button[aria-label="${label}"]`);
      await page.waitForSelector('[role="dialog"]', { timeout: timeoutMs });
      await page.keyboard.press('Escape');
      await page.waitForSelector('[role="dialog"]', { state: 'detached', timeout: timeoutMs });
    }
    ok('documentation explorer shows the schema; short keys and settings dialogs open and close', t);

    // --- page-wide checks
    if (foreignRequests.length) {
      fail(`the page tried to reach other origins (blocked):\n  ${[...new Set(foreignRequests)].join('\n  ')}`);
    }
    ok('no request left the server origin');
    if (cspViolations.length) fail(`Content-Security-Policy violations:\n  ${[...new Set(cspViolations)].join('\n  ')}`);
    ok('no Content-Security-Policy violation');
    if (pageErrors.length) fail(`page errors:\n  ${[...new Set(pageErrors)].join('\n  ')}`);
    ok('no page error');
    if (failedAssets.length) fail(`assets that failed to load:\n  ${failedAssets.join('\n  ')}`);
    ok('every /graphiql/ asset loaded');
    if (otherConsoleErrors.length) {
      console.log(`  note: other console errors:\n    ${[...new Set(otherConsoleErrors)].join('\n    ')}`);
    }
  } catch (err) {
    if (err instanceof TestFailure || err?.name === 'TimeoutError') {
      try {
        const pages = browser.contexts().flatMap((c) => c.pages());
        if (pages[0]) {
          const shot = join(tmpdir(), 'flowpilot-graphiql-browser-test.png');
          await pages[0].screenshot({ path: shot });
          console.error(`  screenshot: ${shot}`);
        }
      } catch {
        /* the screenshot is a bonus */
      }
      const unique = (list) => [...new Set(list)];
      const context = [
        foreignRequests.length && `blocked requests to other origins: ${unique(foreignRequests).join(', ')}`,
        cspViolations.length && `CSP violations: ${unique(cspViolations).join(' | ')}`,
        pageErrors.length && `page errors: ${unique(pageErrors).join(' | ')}`,
        otherConsoleErrors.length && `console errors: ${unique(otherConsoleErrors).join(' | ')}`,
      ].filter((line) => line && !err.message.includes(line.slice(line.indexOf(': ') + 2, line.indexOf(': ') + 80)));
      if (context.length) err.message += `\n  ${context.join('\n  ')}`;
    }
    throw err;
  } finally {
    await browser.close();
  }
}

try {
  await main();
  console.log(`PASS: ${passed.length} checks in ${seconds()}`);
} catch (err) {
  const message = err instanceof TestFailure ? err.message : err.stack || String(err);
  console.error(`FAIL after ${seconds()}: ${message}`);
  process.exitCode = 1;
}
