/**
 * Assertions for the engine's laws. They run in production: a broken law is
 * a bug that must stop the operation rather than corrupt a ledger. Client
 * mistakes are never asserted; they are result codes (see protocol/errors).
 */

export class AssertionError extends Error {
  override name = 'AssertionError';
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

/** Expensive checks (recomputations, cross-checks) run only when verify is on. */
let verifyEnabled = false;

export function setVerify(on: boolean): void {
  verifyEnabled = on;
}

export function verifying(): boolean {
  return verifyEnabled;
}
