/**
 * Scheduled cut-offs: at fixed times of the business day (Beijing time,
 * UTC+8), or every `intervalMs`. The schedule only triggers `closeBatch`;
 * the cut-off itself is the same as an operator's.
 */

import { nextTime, parseTimes, type BatchScheduleConfig } from '../core/business-time.js';

export class BatchSchedule {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly config: BatchScheduleConfig,
    private readonly fire: () => void,
  ) {
    this.arm();
  }

  private arm(): void {
    if (this.stopped) return;
    const now = Date.now();
    const at = 'intervalMs' in this.config ? now + this.config.intervalMs : nextTime(parseTimes(this.config.times), now);
    this.timer = setTimeout(() => {
      this.fire();
      this.arm();
    }, at - now);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
  }
}
