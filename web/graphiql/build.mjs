#!/usr/bin/env node
// Builds assets/graphiql/ (checked in, embedded by the FlowPilot binary) from
// the pinned npm packages in node_modules and our sources in src/.
//
//   node build.mjs           write assets/graphiql/
//   node build.mjs --check   build into a temporary folder and exit 1 when
//                            assets/graphiql/ differs (CI)
//
// Run `npm ci` first. The output depends only on the pinned packages and the
// sources (no timestamps, sorted listings), so a rebuild is byte-identical.

import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..', '..');
const nodeModules = join(here, 'node_modules');
const outDir = join(repoRoot, 'assets', 'graphiql');

// Files copied out of the pinned packages: output name -> [package, path].
const VENDOR = {
  'graphiql.min.js': ['graphiql', 'graphiql.min.js'],
  'graphiql.min.css': ['graphiql', 'graphiql.min.css'],
  'react.production.min.js': ['react', 'umd/react.production.min.js'],
  'react-dom.production.min.js': ['react-dom', 'umd/react-dom.production.min.js'],
  'graphql-ws.min.js': ['graphql-ws', 'umd/graphql-ws.min.js'],
};
// Our own sources, copied as they are (index.html is rewritten, see below).
const OWN = ['flowpilot-graphiql.js'];
// The complete output; the FlowPilot binary embeds exactly these names.
const OUTPUT_FILES = [
  'LICENSES.txt',
  'flowpilot-graphiql.js',
  'graphiql.min.css',
  'graphiql.min.js',
  'graphql-ws.min.js',
  'index.html',
  'react-dom.production.min.js',
  'react.production.min.js',
];
const URL_PREFIX = '/graphiql/';

class BuildError extends Error {}

function fail(message) {
  throw new BuildError(message);
}

function readJson(path) {
  return JSON.parse(readFileSync(path, 'utf8'));
}

function sha256(bytes) {
  return createHash('sha256').update(bytes).digest('hex');
}

function packageDir(name) {
  return join(nodeModules, ...name.split('/'));
}

// The versions in node_modules must be the pinned ones: otherwise the output
// would silently follow whatever happens to be installed.
function checkPins() {
  const pkg = readJson(join(here, 'package.json'));
  const lock = readJson(join(here, 'package-lock.json'));
  const pins = { ...pkg.dependencies, ...pkg.devDependencies };
  const problems = [];
  for (const [name, version] of Object.entries(pins)) {
    if (!/^\d+\.\d+\.\d+$/.test(version)) {
      problems.push(`${name}: "${version}" in package.json is not an exact version`);
      continue;
    }
    const locked = lock.packages?.[`node_modules/${name}`]?.version;
    if (locked !== version) {
      problems.push(`${name}: package-lock.json has ${locked}, package.json pins ${version}`);
    }
    const manifest = join(packageDir(name), 'package.json');
    if (!existsSync(manifest)) {
      problems.push(`${name}: not installed (run npm ci in web/graphiql)`);
      continue;
    }
    const installed = readJson(manifest).version;
    if (installed !== version) {
      problems.push(`${name}: ${installed} installed, ${version} pinned (run npm ci in web/graphiql)`);
    }
  }
  if (problems.length) fail(`node_modules does not match the pins:\n  ${problems.join('\n  ')}`);
  return pins;
}

// Source map references point at files that are not shipped: drop them so
// the browser's developer tools do not ask the server for them.
function stripSourceMapComment(name, text) {
  if (name.endsWith('.js')) return text.replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, '\n');
  if (name.endsWith('.css')) return text.replace(/\n?\/\*# sourceMappingURL=\S+ \*\/\s*$/, '\n');
  return text;
}

function vendorFiles() {
  const files = {};
  for (const [out, [pkg, path]] of Object.entries(VENDOR)) {
    const src = join(packageDir(pkg), path);
    if (!existsSync(src)) fail(`${pkg} has no ${path}`);
    const text = readFileSync(src, 'utf8');
    files[out] = Buffer.from(stripSourceMapComment(out, text), 'utf8');
  }
  return files;
}

// ------------------------------------------------------------------ licences

// Packages whose code is bundled into graphiql.min.js, taken from the
// package's own source map (paths like ../../../node_modules/<pkg>/… or, for
// the GraphiQL monorepo packages, ../../<folder>/…).
const MONOREPO_FOLDERS = {
  'codemirror-graphql': 'codemirror-graphql',
  'graphiql-react': '@graphiql/react',
  'graphiql-toolkit': '@graphiql/toolkit',
  'graphql-language-service': 'graphql-language-service',
};

function bundledInGraphiql() {
  const mapPath = join(packageDir('graphiql'), 'graphiql.min.js.map');
  if (!existsSync(mapPath)) fail('graphiql.min.js.map is missing: cannot list the bundled packages');
  const map = readJson(mapPath);
  const found = new Set();
  for (const source of map.sources) {
    const at = source.lastIndexOf('node_modules/');
    if (at >= 0) {
      const parts = source.slice(at + 'node_modules/'.length).split('/');
      found.add(parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]);
      continue;
    }
    const folder = source.replace(/^(\.\.\/)+/, '').split('/')[0];
    if (MONOREPO_FOLDERS[folder]) found.add(MONOREPO_FOLDERS[folder]);
    else if (folder === 'src') continue; // graphiql itself
    else fail(`unrecognised source in graphiql.min.js.map: ${source}`);
  }
  found.delete('graphiql');
  // React and ReactDOM are external (globals), except react/jsx-runtime,
  // which is bundled; react's licence is listed anyway.
  return [...found].sort();
}

// Locate an installed package: hoisted, or nested under a package that
// depends on it.
function findInstalled(name) {
  const direct = packageDir(name);
  if (existsSync(join(direct, 'package.json'))) return direct;
  const stack = [nodeModules];
  while (stack.length) {
    const dir = stack.pop();
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (!entry.isDirectory()) continue;
      const candidate = join(dir, entry.name);
      if (entry.name === 'node_modules') {
        const hit = join(candidate, ...name.split('/'));
        if (existsSync(join(hit, 'package.json'))) return hit;
      }
      if (entry.name !== '.bin') stack.push(candidate);
    }
  }
  return null;
}

function licenceText(dir) {
  const names = readdirSync(dir).filter((f) => /^(licen[cs]e|copying)([-.](md|txt|mit))*(\.(md|txt))?$/i.test(f)).sort();
  if (!names.length) return null;
  return names.map((f) => readFileSync(join(dir, f), 'utf8').replace(/\r\n/g, '\n').trim()).join('\n\n');
}

const FONT_NOTICE = `The stylesheet graphiql.min.css embeds two web fonts as data: URLs (from
@graphiql/react's font/roboto.css and font/fira-code.css):

  Roboto     Copyright 2011 Google Inc. All Rights Reserved.
             Released by Google under the Apache License, Version 2.0
             (earlier releases) and the SIL Open Font License, Version 1.1
             (current releases). Both texts follow.
  Fira Code  Copyright (c) 2014, The Fira Code Project Authors
             (https://github.com/tonsky/FiraCode).
             Licensed under the SIL Open Font License, Version 1.1.`;

function buildLicences(pins) {
  const sections = [];
  const missing = [];
  // Licence text: the one the installed package ships, else a text kept in
  // licenses/packages/ (for packages that ship none, or whose bundled copy
  // is not installed here; see licenses/README.md).
  const add = (name, why) => {
    const dir = findInstalled(name);
    const manifest = dir ? readJson(join(dir, 'package.json')) : null;
    let text = dir ? licenceText(dir) : null;
    let note = '';
    if (!text) {
      const kept = join(here, 'licenses', 'packages', `${name.replace('/', '__')}.txt`);
      if (!existsSync(kept)) {
        missing.push(dir ? `${name}@${manifest.version} (no licence file)` : `${name} (not installed)`);
        return;
      }
      text = readFileSync(kept, 'utf8').trim();
      note = dir
        ? '\n(The package ships no licence file; text from its upstream repository.)'
        : `\n(Not installed here: the version bundled by graphiql@${pins.graphiql}; text from its upstream repository.)`;
    }
    const version = manifest ? `@${manifest.version}` : '';
    const licence = manifest?.license || 'MIT';
    const header = `${name}${version} (${licence}) - ${why}${note}`;
    sections.push(`${'='.repeat(78)}\n${header}\n${'='.repeat(78)}\n\n${text}\n`);
  };

  add('graphiql', 'graphiql.min.js, graphiql.min.css');
  add('react', 'react.production.min.js; react/jsx-runtime is also bundled in graphiql.min.js');
  add('react-dom', 'react-dom.production.min.js');
  add('scheduler', 'bundled in react-dom.production.min.js');
  add('graphql-ws', 'graphql-ws.min.js; also bundled in graphiql.min.js');
  for (const name of bundledInGraphiql()) {
    if (['react', 'graphql-ws'].includes(name)) continue;
    add(name, 'bundled in graphiql.min.js');
  }
  if (missing.length) fail(`no licence text found for:\n  ${missing.join('\n  ')}`);

  const ofl = readFileSync(join(here, 'licenses', 'OFL-1.1.txt'), 'utf8').trim();
  const apache = readFileSync(join(here, 'licenses', 'Apache-2.0.txt'), 'utf8').trim();
  sections.push(
    `${'='.repeat(78)}\nWeb fonts embedded in graphiql.min.css\n${'='.repeat(78)}\n\n${FONT_NOTICE}\n\n` +
      `${'-'.repeat(78)}\nSIL Open Font License, Version 1.1\n${'-'.repeat(78)}\n\n${ofl}\n\n` +
      `${'-'.repeat(78)}\nApache License, Version 2.0\n${'-'.repeat(78)}\n\n${apache}\n`,
  );

  const intro =
    'FlowPilot GraphiQL: third-party software served by FlowPilot under /graphiql/.\n\n' +
    'Pinned packages (web/graphiql/package.json): ' +
    ['graphiql', 'react', 'react-dom', 'graphql-ws']
      .map((n) => `${n}@${pins[n]}`)
      .join(', ') +
    '.\nPackages bundled in graphiql.min.js are listed with the version npm installs for\n' +
    `graphiql@${pins.graphiql}'s dependency ranges, whose licence text is reproduced; the copy\n` +
    "bundled by GraphiQL's own build may be an earlier release of the same range.\n\n" +
    'flowpilot-graphiql.js and index.html are part of FlowPilot.\n\n';
  return Buffer.from(intro + sections.join('\n'), 'utf8');
}

// ------------------------------------------------------------------ index.html

// Every asset reference in src/index.html is a bare file name; it becomes
// /graphiql/<file>?v=<first 12 hex of its sha256> for cache busting.
function buildIndex(files) {
  let html = readFileSync(join(here, 'src', 'index.html'), 'utf8');
  const referenced = new Set();
  html = html.replace(/\b(src|href)="([^"]+)"/g, (match, attr, value) => {
    if (value.startsWith('data:')) return match;
    if (!files[value]) fail(`src/index.html references ${value}, which is not built`);
    referenced.add(value);
    return `${attr}="${URL_PREFIX}${value}?v=${sha256(files[value]).slice(0, 12)}"`;
  });
  for (const name of Object.keys(files)) {
    if (name.endsWith('.js') || name.endsWith('.css')) {
      if (!referenced.has(name)) fail(`src/index.html does not reference ${name}`);
    }
  }
  if (/<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=/i.test(html)) {
    fail('src/index.html must not contain inline scripts, styles or event handlers (CSP)');
  }
  return Buffer.from(html, 'utf8');
}

// ------------------------------------------------------------------ build

function build(target) {
  const pins = checkPins();
  const files = vendorFiles();
  for (const name of OWN) files[name] = readFileSync(join(here, 'src', name));
  files['index.html'] = buildIndex(files);
  files['LICENSES.txt'] = buildLicences(pins);

  const names = Object.keys(files).sort();
  if (JSON.stringify(names) !== JSON.stringify(OUTPUT_FILES)) {
    fail(`output would be [${names}], expected [${OUTPUT_FILES}]`);
  }
  mkdirSync(target, { recursive: true });
  for (const entry of readdirSync(target)) {
    if (!files[entry]) rmSync(join(target, entry), { recursive: true, force: true });
  }
  for (const name of names) writeFileSync(join(target, name), files[name]);
  return files;
}

function listDir(dir) {
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

function check() {
  const tmp = mkdtempSync(join(tmpdir(), 'flowpilot-graphiql-'));
  try {
    build(tmp);
    const expected = listDir(tmp);
    const actual = listDir(outDir);
    const differences = [];
    for (const name of [...new Set([...expected, ...actual])].sort()) {
      if (!actual.includes(name)) differences.push(`missing:    ${name}`);
      else if (!expected.includes(name)) differences.push(`unexpected: ${name}`);
      else if (!readFileSync(join(tmp, name)).equals(readFileSync(join(outDir, name)))) {
        differences.push(`differs:    ${name}`);
      }
    }
    const where = relative(process.cwd(), outDir) || outDir;
    if (differences.length) {
      console.error(`${where} is out of date with web/graphiql (pinned packages and src/):`);
      for (const d of differences) console.error(`  ${d}`);
      console.error('Rebuild with: (cd web/graphiql && npm ci && node build.mjs)');
      return 1;
    }
    console.log(`${where} is up to date (${expected.length} files).`);
    return 0;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function main(args) {
  const unknown = args.filter((a) => a !== '--check');
  if (unknown.length) {
    console.error(`usage: node build.mjs [--check]   (unknown: ${unknown.join(' ')})`);
    return 2;
  }
  if (args.includes('--check')) return check();
  const files = build(outDir);
  for (const name of Object.keys(files).sort()) {
    console.log(`${String(files[name].length).padStart(9)}  ${sha256(files[name]).slice(0, 12)}  ${name}`);
  }
  console.log(`wrote ${relative(process.cwd(), outDir) || outDir}`);
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  if (err instanceof BuildError) {
    console.error(`build.mjs: ${err.message}`);
    process.exitCode = 1;
  } else {
    throw err;
  }
}
