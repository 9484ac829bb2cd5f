/**
 * Simulated time: the clock port over a queue of events ordered by time,
 * then by the order they were scheduled. `defer` runs before any timer due
 * at the same time, as setImmediate does. Timers may be made to fire late.
 * Every event carries the epoch of the engine that scheduled it: a crash
 * starts a new epoch, and the dead engine's events never run.
 */

import type { Clock, TimerHandle } from '../../src/core/ports.js';
import type { Prng } from './prng.js';

interface SimEvent {
  at: number;
  seq: number;
  epoch: number;
  cancelled: boolean;
  fn: () => void;
  label: string;
}

export class SimClock implements Clock {
  private nowMs: number;
  private seq = 0;
  private events: SimEvent[] = [];
  epoch = 0;
  /** Probability that a timer fires late, and by how much at most. */
  lateTimerChance = 0;
  lateTimerMsMax = 0;

  constructor(
    startMs: number,
    private readonly prng: Prng,
  ) {
    this.nowMs = startMs;
  }

  now(): number {
    return this.nowMs;
  }

  monotonicMs(): number {
    return this.nowMs;
  }

  defer(fn: () => void): void {
    this.schedule(0, fn, 'defer');
  }

  after(ms: number, fn: () => void): TimerHandle {
    const late = this.lateTimerChance > 0 && this.prng.chance(this.lateTimerChance) ? this.prng.between(1, this.lateTimerMsMax) : 0;
    return this.schedule(Math.max(1, ms) + late, fn, 'timer') as unknown as TimerHandle;
  }

  cancel(timer: TimerHandle): void {
    (timer as unknown as SimEvent).cancelled = true;
  }

  /** Schedule a simulator event (a worker's progress, a store write) `ms` from now. */
  schedule(ms: number, fn: () => void, label: string): SimEvent {
    const e: SimEvent = { at: this.nowMs + ms, seq: this.seq++, epoch: this.epoch, cancelled: false, fn, label };
    // Events are few; a sorted insert keeps the order obvious.
    let i = this.events.length;
    while (i > 0 && (this.events[i - 1]!.at > e.at || (this.events[i - 1]!.at === e.at && this.events[i - 1]!.seq > e.seq))) i--;
    this.events.splice(i, 0, e);
    return e;
  }

  get pending(): number {
    return this.events.length;
  }

  /** Run the next live event, moving time to it; false when there is none. */
  step(): boolean {
    for (;;) {
      const e = this.events.shift();
      if (e === undefined) return false;
      if (e.cancelled || e.epoch !== this.epoch) continue;
      this.nowMs = Math.max(this.nowMs, e.at);
      e.fn();
      return true;
    }
  }

  /** The time of the next live event, if any. */
  nextAt(): number | undefined {
    for (const e of this.events) if (!e.cancelled && e.epoch === this.epoch) return e.at;
    return undefined;
  }

  /** A crash: the engine's pending events die with it. */
  newEpoch(): void {
    this.epoch++;
    this.events = [];
  }

  advance(ms: number): void {
    this.nowMs += ms;
  }
}
