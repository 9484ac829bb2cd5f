/**
 * Which way imports may go (`npm run deps`, run by CI after the type-check).
 *
 * The clearing core (core, clearing, router, lifecycle, view, settlement,
 * snapshots) makes every decision and does its I/O only through the ports
 * of src/core/ports.ts, so the simulator can drive it; it must not reach the
 * transport, the thread pool, the database or the process-wide services
 * that the engine wires to those ports. src/shard/tasks.ts is the message
 * format between the router and the shard workers and stays pure, so the
 * core may use it; the worker, its ledger and the pool may not be used.
 *
 * Type-only imports count: a cycle through types still ties two modules
 * together, and a type from the store is still the store's.
 *
 * `npm run deps` passes `--ignore-known`: breaks that were in the code when
 * a rule came in are listed in .dependency-cruiser-known-violations.json,
 * reported as ignored, and every new one fails. An entry goes once its
 * import is fixed; `npx depcruise src --config .dependency-cruiser.cjs
 * --no-ignore-known` lists them.
 */

const CORE = '^src/(core|clearing|router|lifecycle|view|settlement|snapshots)/';
const IO_PACKAGES = '(lmdb|piscina|uWebSockets\\.js|prom-client|pino)';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'No import cycles in src/: each component can be read, tested and replaced on its own.',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'core-not-to-io-modules',
      severity: 'error',
      comment:
        'The clearing core reaches the gateway, the store, the engine wiring, the metrics and the shard workers only through its ports.',
      from: { path: CORE },
      to: {
        path: ['^src/(gateway|store|engine|metrics)/', '^src/shard/(worker|ledger|shard-pools)\\.ts$'],
      },
    },
    {
      name: 'core-not-to-io-packages',
      severity: 'error',
      comment: 'The clearing core imports no transport, thread pool, database, metrics or logging library.',
      from: { path: CORE },
      to: {
        // Resolved packages live under node_modules/; an unresolvable one keeps its bare name.
        path: [`(^|/)node_modules/${IO_PACKAGES}(/|$)`, `^${IO_PACKAGES}(/|$)`],
      },
    },
    {
      name: 'shard-tasks-stay-pure',
      severity: 'error',
      comment: 'src/shard/tasks.ts is the message format the core shares with the workers: it may import only src/core/.',
      from: { path: '^src/shard/tasks\\.ts$' },
      to: { pathNot: '^src/core/' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      comment: 'An import that does not resolve is a typo or a missing dependency.',
      from: { path: '^src/' },
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // Keep type-only imports in the graph: they make cycles and layer breaks too.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js', '.mjs', '.cjs', '.d.ts', '.json'],
    },
    reporterOptions: {
      text: { highlightFocused: true },
    },
  },
};
