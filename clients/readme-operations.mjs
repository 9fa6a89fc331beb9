#!/usr/bin/env node
// Extracts every fenced ```graphql block of FlowPilot's README.md, in order, into
// clients/.generated/readme/NNN.graphql (001.graphql, 002.graphql, ...), one file per block,
// so that graphql-codegen (codegen.ts) checks each documented operation against
// schema.graphql and types it.
//
//   node readme-operations.mjs [path/to/README.md]     # default: ../README.md
//
// Each block must be one named operation plus exactly the fragments it uses, so that it can
// be pasted into GraphiQL as it is, and operation names must be unique across the README.
// Every block is written out either way; a block that breaks these rules is reported with
// its README line and the run exits 1. (Whether the operations are valid against the schema
// is codegen's check.) Blocks may be indented (inside a numbered list): the fence's own
// indentation is removed from each line of the block. Each file starts with a comment naming
// the README line of its block, which codegen's error messages show.
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Kind, parse, print, visit } from 'graphql';

const here = dirname(fileURLToPath(import.meta.url));
const readmePath = resolve(process.argv[2] ?? join(here, '..', 'README.md'));
const outDir = join(here, '.generated', 'readme');

/** Fenced blocks whose info string's first word is `graphql` (CommonMark fences). */
function graphqlBlocks(markdown) {
  const lines = markdown.split(/\r?\n/);
  const blocks = [];
  let open = null; // { indent, fence, info, startLine, body }
  lines.forEach((line, i) => {
    if (open === null) {
      const m = /^( *)(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/.exec(line);
      if (m) open = { indent: m[1].length, fence: m[2], info: m[3].toLowerCase(), startLine: i + 1, body: [] };
      return;
    }
    const close = /^ *(`{3,}|~{3,})\s*$/.exec(line);
    if (close && close[1][0] === open.fence[0] && close[1].length >= open.fence.length) {
      if (open.info === 'graphql' || open.info === 'gql') {
        blocks.push({ line: open.startLine, text: open.body.join('\n') });
      }
      open = null;
      return;
    }
    // Remove up to `indent` leading spaces, as CommonMark does for an indented fence.
    let strip = 0;
    while (strip < open.indent && line[strip] === ' ') strip++;
    open.body.push(line.slice(strip));
  });
  if (open !== null && (open.info === 'graphql' || open.info === 'gql')) {
    throw new Error(`README.md line ${open.startLine}: a graphql block is never closed`);
  }
  return blocks;
}

/** Names of the fragments a definition spreads. */
function spreads(definition) {
  const names = new Set();
  visit(definition, { FragmentSpread: (node) => void names.add(node.name.value) });
  return names;
}

/** The README's rules for one block; returns a list of problems. */
function checkBlock(block, seenOperations, seenFragments) {
  const problems = [];
  let document;
  try {
    document = parse(block.text, { noLocation: false });
  } catch (error) {
    return [`does not parse: ${error.message}`];
  }
  const operations = document.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);
  const fragments = document.definitions.filter((d) => d.kind === Kind.FRAGMENT_DEFINITION);
  const other = document.definitions.filter(
    (d) => d.kind !== Kind.OPERATION_DEFINITION && d.kind !== Kind.FRAGMENT_DEFINITION,
  );
  const describe = (op) => {
    const field = op.selectionSet.selections.find((sel) => sel.kind === Kind.FIELD)?.name.value ?? '…';
    return `${op.operation} ${op.name ? `${op.name.value} ` : ''}{ ${field} … } (line ${block.line + op.loc.startToken.line})`;
  };
  if (other.length > 0) problems.push(`holds ${other.map((d) => d.kind).join(', ')}; only operations and fragments belong here`);
  if (operations.length !== 1) {
    problems.push(
      `holds ${operations.length} operations, one per block is the rule: ${operations.map(describe).join('; ') || 'none'}`,
    );
  }
  for (const op of operations) {
    if (!op.name) {
      const field = op.selectionSet.selections.find((sel) => sel.kind === Kind.FIELD)?.name.value ?? 'operation';
      const suggestion = field[0].toUpperCase() + field.slice(1);
      problems.push(`${describe(op)} is anonymous: name it, e.g. \`${op.operation} ${suggestion}\``);
      continue;
    }
    const name = op.name.value;
    const first = seenOperations.get(name);
    if (first !== undefined) problems.push(`operation name ${name} is already used by the block at README line ${first}`);
    else seenOperations.set(name, block.line);
  }
  // Fragments: exactly those the block's operation uses (directly or through other fragments).
  const defined = new Map(fragments.map((f) => [f.name.value, f]));
  const used = new Set();
  const pending = operations.flatMap((op) => [...spreads(op)]);
  while (pending.length > 0) {
    const name = pending.pop();
    if (used.has(name)) continue;
    used.add(name);
    if (!defined.has(name)) problems.push(`uses fragment ${name}, which the block does not define`);
    else pending.push(...spreads(defined.get(name)));
  }
  for (const [name, fragment] of defined) {
    if (!used.has(name)) problems.push(`defines fragment ${name}, which its operation does not use`);
    // A fragment repeated in several blocks must read the same everywhere: its generated
    // type has one name.
    const text = print(fragment);
    const first = seenFragments.get(name);
    if (first === undefined) seenFragments.set(name, { text, line: block.line });
    else if (first.text !== text) {
      problems.push(`fragment ${name} differs from the one of the same name at README line ${first.line}`);
    }
  }
  return problems;
}

function main() {
  const markdown = readFileSync(readmePath, 'utf8');
  const blocks = graphqlBlocks(markdown);
  if (blocks.length === 0) {
    console.error(`readme-operations: no \`\`\`graphql block in ${readmePath}`);
    process.exit(1);
  }
  mkdirSync(outDir, { recursive: true });
  for (const name of readdirSync(outDir)) {
    if (/^\d+\.graphql$/.test(name)) rmSync(join(outDir, name));
  }
  const width = Math.max(3, String(blocks.length).length);
  const source = relative(join(here, '..'), readmePath) || readmePath;
  const seenOperations = new Map();
  const seenFragments = new Map();
  let problemCount = 0;
  blocks.forEach((block, i) => {
    const fileName = `${String(i + 1).padStart(width, '0')}.graphql`;
    writeFileSync(join(outDir, fileName), `# ${source} line ${block.line}\n${block.text.trimEnd()}\n`);
    for (const problem of checkBlock(block, seenOperations, seenFragments)) {
      problemCount += 1;
      console.error(`${source} line ${block.line} (${fileName}): ${problem}`);
    }
  });
  console.log(`readme-operations: ${blocks.length} graphql blocks from ${source} -> ${relative(here, outDir)}/`);
  if (problemCount > 0) {
    console.error(
      `readme-operations: ${problemCount} problem(s); each \`\`\`graphql block must be one named operation ` +
        '(unique across the README) plus the fragments it uses',
    );
    process.exit(1);
  }
}

main();
