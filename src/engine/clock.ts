/**
 * The production clock port: Node's wall clock, `performance.now()`, and
 * its timers. Timers are unref'd: a pending expiry or snapshot never keeps
 * a stopping process alive.
 */

import type { Clock, TimerHandle } from '../core/ports.js';

export const nodeClock: Clock = {
  now: () => Date.now(),
  monotonicMs: () => performance.now(),
  defer: (fn) => {
    setImmediate(fn);
  },
  after: (ms, fn) => setTimeout(fn, ms).unref() as unknown as TimerHandle,
  cancel: (timer) => clearTimeout(timer as unknown as NodeJS.Timeout),
};
