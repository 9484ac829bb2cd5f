/**
 * The logger the core writes to: the few calls it makes of pino's logger
 * (src/engine/log.ts builds the real one), so the core does not depend on
 * pino and the simulator can hand in a silent or recording logger.
 */

export interface LogFn {
  (obj: object, msg?: string): void;
  (msg: string): void;
}

export interface Logger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
}
