/**
 * Structured logs: JSON lines through pino. Tokens never reach a log line:
 * the gateway never passes them in, and the usual places are redacted too.
 */

import { pino, type Logger as PinoLogger } from 'pino';
import type { LogLevel } from '../config/config.js';

export type Logger = PinoLogger;

export function createLogger(level: LogLevel): Logger {
  return pino({
    level,
    base: { service: 'netting-engine' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['token', '*.token', 'authorization', '*.authorization', 'headers.authorization'], censor: '[redacted]' },
  });
}
