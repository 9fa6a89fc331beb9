#!/usr/bin/env node
// What a change to FlowPilot's schema.graphql means for the clients already written against
// it: @graphql-inspector/core compares the schema of a base commit (HEAD~1 unless
// SCHEMA_DIFF_BASE names another revision) with the working tree's, and prints every change
// with its criticality (BREAKING, DANGEROUS, NON_BREAKING).
//
//   node schema-diff.mjs                          # HEAD~1 against the working tree
//   SCHEMA_DIFF_BASE=origin/main node schema-diff.mjs
//
// Exits 1 on any BREAKING change, unless the HEAD commit's message holds a line
// `schema-break: <reason>` (the reason is printed and the check passes). Passes with a note
// when there is nothing to compare with: the base has no schema.graphql, the repository has
// a single commit, or a shallow clone does not hold the base.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSchema } from 'graphql';
import { CriticalityLevel, diff } from '@graphql-inspector/core';

const here = dirname(fileURLToPath(import.meta.url));
const explicitBase = process.env.SCHEMA_DIFF_BASE?.trim() || '';
const base = explicitBase || 'HEAD~1';
const SCHEMA = 'schema.graphql';

function git(args, { allowFail = false } = {}) {
  try {
    return execFileSync('git', args, { cwd: here, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  } catch (error) {
    if (allowFail) return null;
    throw new Error(`git ${args.join(' ')} failed: ${String(error.stderr || error.message).trim()}`);
  }
}

function pass(note) {
  console.log(`schema-diff: ${note}`);
  process.exit(0);
}

const root = git(['rev-parse', '--show-toplevel']).trim();
const schemaPath = join(root, SCHEMA);
if (!existsSync(schemaPath)) {
  console.error(`schema-diff: no ${SCHEMA} in the working tree (${schemaPath})`);
  process.exit(1);
}

// The base revision: missing in a shallow clone or on the first commit.
const baseCommit = git(['rev-parse', '--verify', '--quiet', `${base}^{commit}`], { allowFail: true })?.trim();
if (!baseCommit) {
  const shallow = git(['rev-parse', '--is-shallow-repository'], { allowFail: true })?.trim() === 'true';
  if (shallow) pass(`${base} is not in this shallow clone; nothing to compare with (fetch more history to check)`);
  if (!explicitBase) pass('HEAD has no parent commit; nothing to compare with');
  console.error(`schema-diff: SCHEMA_DIFF_BASE=${explicitBase} is not a commit of this repository`);
  process.exit(1);
}
const baseLabel = `${base} (${baseCommit.slice(0, 12)})`;

const oldSdl = git(['show', `${baseCommit}:${SCHEMA}`], { allowFail: true });
if (oldSdl === null) pass(`${baseLabel} has no ${SCHEMA}; nothing to compare with`);
const newSdl = readFileSync(schemaPath, 'utf8');

function load(sdl, label) {
  try {
    return buildSchema(sdl);
  } catch (error) {
    console.error(`schema-diff: the ${label} ${SCHEMA} is not a valid schema: ${error.message}`);
    process.exit(1);
  }
}
const oldSchema = load(oldSdl, `base's (${baseLabel})`);
const newSchema = load(newSdl, "working tree's");

const changes = await diff(oldSchema, newSchema);
const order = [CriticalityLevel.Breaking, CriticalityLevel.Dangerous, CriticalityLevel.NonBreaking];
changes.sort((a, b) => order.indexOf(a.criticality.level) - order.indexOf(b.criticality.level));

console.log(`schema-diff: ${SCHEMA} of ${baseLabel} -> working tree: ${changes.length} change(s)`);
const counts = { [CriticalityLevel.Breaking]: 0, [CriticalityLevel.Dangerous]: 0, [CriticalityLevel.NonBreaking]: 0 };
for (const change of changes) {
  const level = change.criticality.level;
  counts[level] = (counts[level] ?? 0) + 1;
  const where = change.path ? `  [${change.path}]` : '';
  console.log(`  ${level.padEnd(12)} ${change.message.replace(/\s*\n\s*/g, " ")}${where}`);
  if (level !== CriticalityLevel.NonBreaking && change.criticality.reason) {
    console.log(`  ${''.padEnd(12)}   why: ${change.criticality.reason}`);
  }
}
console.log(
  `schema-diff: ${counts.BREAKING} breaking, ${counts.DANGEROUS} dangerous, ${counts.NON_BREAKING} non-breaking`,
);

if (counts.BREAKING === 0) pass('no breaking change');

const message = git(['log', '-1', '--format=%B']);
const override = /^\s*schema-break:[ \t]*(\S.*)$/im.exec(message);
if (override) {
  pass(`${counts.BREAKING} breaking change(s) accepted by the HEAD commit message: schema-break: ${override[1].trim()}`);
}
console.error(
  `schema-diff: ${counts.BREAKING} breaking change(s). If they are intended, say why in the commit message ` +
    'with a line `schema-break: <reason>`.',
);
process.exit(1);
