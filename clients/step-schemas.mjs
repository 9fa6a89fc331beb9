// The JSON Schema each step kind publishes (`stepKinds { configSchema }`) compiles in Ajv's
// strict mode, as an editor or a form library would use it.
//
//   node step-schemas.mjs http://127.0.0.1:PORT/graphql
//
// Exits 1 when a schema does not compile, or when one accepts a config it should refuse
// (a DELAY of "soon" milliseconds) or refuses one it should accept.
import Ajv2020 from 'ajv/dist/2020.js';

const url = process.argv[2];
if (!url) {
  console.error('usage: node step-schemas.mjs <graphql url>');
  process.exit(2);
}

const response = await fetch(url, {
  method: 'POST',
  headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
  body: JSON.stringify({ query: 'query StepSchemas { stepKinds { kind configSchema } }' }),
});
const body = await response.json();
if (!response.ok || body.errors) {
  console.error(`stepKinds failed (${response.status}):`, JSON.stringify(body));
  process.exit(1);
}

let failed = 0;
const validators = {};
for (const { kind, configSchema } of body.data.stepKinds) {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  try {
    validators[kind] = ajv.compile(configSchema);
    console.log(`ok     ${kind}`);
  } catch (error) {
    failed += 1;
    console.log(`FAIL   ${kind}: ${error.message}`);
  }
}

const expectations = [
  ['DELAY', { ms: 250 }, true],
  ['DELAY', { ms: 'soon' }, false],
  ['DELAY', { ms: -1 }, false],
  ['HTTP', { url: 'https://example.com', method: 'POST' }, true],
  ['HTTP', { method: 'POST' }, false],
  ['HTTP', { url: 'https://example.com', verb: 'POST' }, false],
];
for (const [kind, config, valid] of expectations) {
  const validate = validators[kind];
  if (!validate) continue;
  if (validate(config) !== valid) {
    failed += 1;
    console.log(`FAIL   ${kind} ${JSON.stringify(config)}: expected ${valid ? 'valid' : 'invalid'}`);
  }
}

console.log(failed ? `step schemas: ${failed} failed` : 'step schemas: all compile in strict mode');
process.exit(failed ? 1 : 0);
