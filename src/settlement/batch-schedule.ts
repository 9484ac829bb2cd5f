/**
 * Scheduled cut-offs: at fixed times of the business day (Beijing time,
 * UTC+8), or every `intervalMs`. The schedule only triggers `closeBatch`;
 * the cut-off itself is the same as an operator's.
 */

import { nextTime, parseTimes, type BatchScheduleConfig } from '../core/business-time.js';
import type { Clock, TimerHandle } from '../core/ports.js';

export class BatchSchedule {
  private timer: TimerHandle | undefined;
  private stopped = false;

  constructor(
    private readonly config: BatchScheduleConfig,
    private readonly clock: Clock,
    private readonly fire: () => void,
  ) {
    this.arm();
  }

  private arm(): void {
    if (this.stopped) return;
    const now = this.clock.now();
    const at = 'intervalMs' in this.config ? now + this.config.intervalMs : nextTime(parseTimes(this.config.times), now);
    this.timer = this.clock.after(at - now, () => {
      this.fire();
      this.arm();
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) this.clock.cancel(this.timer);
  }
}
