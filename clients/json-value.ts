// The TypeScript type of FlowPilot's `JSON` scalar (workflow definitions, execution input
// and output, step output, audit details): any JSON value. codegen.ts maps the scalar here.
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
