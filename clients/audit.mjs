#!/usr/bin/env node
// GraphQL over HTTP conformance of a running FlowPilot server, as judged by graphql-http's
// own server audit (the same one the graphql-http project runs against other servers).
//
//   node audit.mjs http://127.0.0.1:8000/graphql
//
// Prints every audit (id, requirement, status, name; the reason and the answer for each one
// that is not ok), then a summary such as `MUST 13/13, SHOULD 23/23, MAY 2/3`. Exits 1 when
// any MUST or SHOULD audit is not ok; MAY audits are printed but never fail the run.
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url || !/^https?:\/\//.test(url)) {
  console.error('usage: node audit.mjs <http(s)://host:port/graphql>');
  process.exit(2);
}

const BODY_EXCERPT = 300;

/** The answer's status, content type and the start of its body, when it can still be read. */
async function describe(response) {
  if (!response || typeof response.status !== 'number') return '';
  let body = '';
  try {
    body = (await response.clone().text()).replace(/\s+/g, ' ').trim();
    if (body.length > BODY_EXCERPT) body = `${body.slice(0, BODY_EXCERPT)}…`;
  } catch {
    body = '(body already read)';
  }
  const type = response.headers?.get?.('content-type') ?? '-';
  return `HTTP ${response.status}, content-type ${type}${body ? `, body ${body}` : ''}`;
}

const results = await auditServer({ url });
const levels = { MUST: { ok: 0, total: 0 }, SHOULD: { ok: 0, total: 0 }, MAY: { ok: 0, total: 0 } };
let failing = 0;

for (const result of results) {
  const level = result.name.split(' ', 1)[0];
  const tally = levels[level] ?? (levels[level] = { ok: 0, total: 0 });
  tally.total += 1;
  if (result.status === 'ok') tally.ok += 1;
  else if (level === 'MUST' || level === 'SHOULD') failing += 1;

  const mark = result.status === 'ok' ? 'ok    ' : result.status.padEnd(6);
  console.log(`${mark} ${result.id}  ${result.name}`);
  if (result.status !== 'ok') {
    console.log(`         reason: ${result.reason}`);
    const answer = await describe(result.response);
    if (answer) console.log(`         answer: ${answer}`);
  }
}

const summary = Object.entries(levels)
  .filter(([, t]) => t.total > 0)
  .map(([level, t]) => `${level} ${t.ok}/${t.total}`)
  .join(', ');
console.log(`\ngraphql-http ${results.length} audits against ${url}: ${summary}`);
if (failing > 0) {
  console.log(`audit: ${failing} MUST/SHOULD audit(s) not ok`);
  process.exit(1);
}
console.log('audit: every MUST and SHOULD audit is ok');
