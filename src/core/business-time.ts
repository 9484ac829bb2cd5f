/**
 * Business time: the clearing day follows Beijing time (UTC+8), whatever
 * the machine's time zone. Batch ids carry the business date, and
 * scheduled cut-offs are times of the business day.
 */

export type BatchScheduleConfig = { intervalMs: number } | { times: string[] };

export const BUSINESS_OFFSET_MS = 8 * 3600_000;
const DAY_MS = 86_400_000;

/** Milliseconds after midnight (business time) of each "HH:MM", sorted. */
export function parseTimes(times: readonly string[]): number[] {
  return times
    .map((t) => {
      const m = /^([01][0-9]|2[0-3]):([0-5][0-9])$/.exec(t);
      if (m === null) throw new Error(`bad time '${t}'`);
      return (Number(m[1]) * 60 + Number(m[2])) * 60_000;
    })
    .sort((a, b) => a - b);
}

/** The first scheduled time strictly after `now`. */
export function nextTime(offsets: readonly number[], now: number): number {
  const local = now + BUSINESS_OFFSET_MS;
  const dayStart = local - (local % DAY_MS);
  for (const day of [0, DAY_MS]) {
    for (const o of offsets) {
      const at = dayStart + day + o - BUSINESS_OFFSET_MS;
      if (at > now) return at;
    }
  }
  throw new Error('no scheduled time');
}

/** Business dates follow Beijing time (UTC+8), as the clearing day does. */
export function businessDate(ms: number): string {
  const d = new Date(ms + BUSINESS_OFFSET_MS);
  const y = d.getUTCFullYear();
  const m = String(d.getUTCMonth() + 1).padStart(2, '0');
  const day = String(d.getUTCDate()).padStart(2, '0');
  return `${y}${m}${day}`;
}
