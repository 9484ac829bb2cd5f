import { defineConfig } from 'vitest/config';

// Integration tests spawn the compiled engine (dist/) as a child process, so
// `npm test` builds first. The forks pool is the safe one with native addons.
//
// The cluster tests (test/cluster/) run after everything else, one file at a
// time: each runs three nats-server and three engine processes with 1 s
// leases and measures failover and interruption times, which two cores
// shared with the rest of the suite stretch past their bounds.
export default defineConfig({
  test: {
    setupFiles: ['test/helpers/setup.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: 'engine',
          include: ['test/**/*.test.ts'],
          exclude: ['test/cluster/**'],
          fileParallelism: true,
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'cluster',
          include: ['test/cluster/**/*.test.ts'],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
