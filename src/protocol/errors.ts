/**
 * Result codes on the wire: the catalog itself lives in the core
 * (src/core/failures.ts), since decisions produce them; this module adds
 * what HTTP needs to carry them.
 */

export { ERROR_CATALOG, failure, httpStatusOf, type ErrorCode, type Failure } from '../core/failures.js';

/** Status line text uWebSockets.js wants in writeStatus. */
const STATUS_TEXT: Record<number, string> = {
  200: '200 OK',
  202: '202 Accepted',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  403: '403 Forbidden',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  409: '409 Conflict',
  413: '413 Payload Too Large',
  415: '415 Unsupported Media Type',
  422: '422 Unprocessable Entity',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
  507: '507 Insufficient Storage',
};

export function statusLine(status: number): string {
  return STATUS_TEXT[status] ?? `${status} Status`;
}
