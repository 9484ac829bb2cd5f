import { defineConfig } from 'vitest/config';

// Integration tests spawn the compiled engine (dist/) as a child process, so
// `npm test` builds first. The forks pool is the safe one with native addons.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/helpers/setup.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: true,
    maxWorkers: 2,
  },
});
