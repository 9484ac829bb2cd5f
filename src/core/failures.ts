/**
 * The one catalog of result codes, a domain concept: the core decides
 * outcomes as these values and the protocol carries them. The string code is the contract
 * (PROTOCOL.md "Error codes"); the HTTP status travels beside it. Codes are
 * only ever appended, never renamed or removed.
 */

export const ERROR_CATALOG = {
  INVALID_MESSAGE: { status: 400, message: 'the body or frame does not decode, or is not an object of the expected shape' },
  INVALID_FIELD: { status: 400, message: 'a field is missing, of the wrong type or out of its rule' },
  UNKNOWN_BANK: { status: 422, message: 'the bank is not a participant' },
  SAME_BANK: { status: 422, message: 'payer and payee are the same bank' },
  AMOUNT_OUT_OF_RANGE: { status: 422, message: 'amount is out of range' },
  DUPLICATE_CONFLICT: { status: 409, message: 'the id exists with different content' },
  DEBIT_CAP_EXCEEDED: { status: 422, message: "the payer bank's debit cap would be passed" },
  NOT_FOUND: { status: 404, message: 'not found' },
  NOT_PENDING: { status: 409, message: 'the instruction is already final with another outcome' },
  UNAUTHORIZED: { status: 401, message: 'missing or unknown token' },
  FORBIDDEN: { status: 403, message: "the token's role may not do this" },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'body or frame over the configured limit' },
  OVERLOADED: { status: 503, message: 'the engine is shedding load; retry later' },
  MANDATE_INVALID: { status: 422, message: 'the mandate is missing, not active, for another payer bank, or below the amount' },
  INTERNAL: { status: 500, message: 'internal error; the instruction was not accepted' },
  NOT_LEADER: { status: 503, message: 'this node is a follower; send requests to the leader' },
  // Engine extensions (allowed by PROTOCOL.md: "the engine may add codes").
  NOT_READY: { status: 503, message: 'the engine is starting or shutting down' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'the route does not accept this method' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'send application/json or application/msgpack' },
  BATCH_OPEN: { status: 409, message: 'the batch is still open' },
  BATCH_LIMIT: { status: 409, message: 'the business day has all the batches its ids allow; the next cut-off can be made on the next business day' },
  STORAGE_FULL: { status: 507, message: "the shard's storage is at its limit; nothing was stored" },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CATALOG;

export function httpStatusOf(code: ErrorCode): number {
  return ERROR_CATALOG[code].status;
}

/** A client-caused failure as a value: what the wire carries. */
export interface Failure {
  code: ErrorCode;
  message: string;
  field?: string;
}

export function failure(code: ErrorCode, message?: string, field?: string): Failure {
  const f: Failure = { code, message: message ?? ERROR_CATALOG[code].message };
  if (field !== undefined) f.field = field;
  return f;
}
