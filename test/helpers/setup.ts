/**
 * Runs in every test file: an engine a failed test did not stop is killed
 * when the file is done, so it cannot outlive the run.
 */

import { afterAll } from 'vitest';
import { killLeftoverEngines } from './engine-process.js';

afterAll(() => {
  killLeftoverEngines();
});
