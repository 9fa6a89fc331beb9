// graphql-codegen over the GraphQL operations of FlowPilot's README.md, as extracted by
// readme-operations.mjs into .generated/readme/NNN.graphql: every documented operation must
// validate against schema.graphql and get a name of its own, and every scalar of the schema
// must have a TypeScript type here (strictScalars fails on one that has none).
//
//   npx graphql-codegen --config codegen.ts    # writes .generated/graphql.ts
import type { CodegenConfig } from '@graphql-codegen/cli';

const shared = {
  strictScalars: true,
  scalars: {
    // RFC 3339 date-time strings, e.g. "2027-06-30T00:00:00Z".
    DateTime: 'string',
    // Any JSON value; see json-value.ts (the path is relative to the output file).
    JSON: '../json-value.js#JsonValue',
    ID: 'string',
    UUID: 'string',
  },
  useTypeImports: true,
  // Relative imports with a .js extension, as Node's ES module resolution (tsconfig's
  // "nodenext") requires.
  importExtension: '.js' as const,
  // A nullable field is always present in an answer (`field: T | null`), while nullable
  // input fields and arguments may be left out (`field?: T | null`).
  avoidOptionals: { field: true, inputValue: false, object: true, defaultValue: false },
};

const config: CodegenConfig = {
  schema: '../schema.graphql',
  overwrite: true,
  silent: false,
  errorsOnly: true,
  generates: {
    // Every type of the schema (the `typescript` plugin).
    '.generated/schema-types.ts': {
      plugins: ['typescript'],
      config: { ...shared, enumsAsTypes: true },
    },
    // The README's operations: their variables and results (`typescript-operations`), with
    // the schema's enums and input types imported from schema-types.ts.
    '.generated/graphql.ts': {
      documents: ['.generated/readme/*.graphql'],
      plugins: ['typescript-operations'],
      config: {
        ...shared,
        importSchemaTypesFrom: './.generated/schema-types.ts',
        namespacedImportName: 'Types',
        enumType: 'string-literal',
        preResolveTypes: true,
        dedupeOperationSuffix: true,
      },
    },
  },
};

export default config;
