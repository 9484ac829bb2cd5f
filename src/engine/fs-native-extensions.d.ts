/**
 * Types for the part of fs-native-extensions (which ships none) that
 * src/engine/data-lock.ts uses.
 */

declare module 'fs-native-extensions' {
  /**
   * Take a lock on `fd` without waiting: true if taken, false if another open
   * file description holds a conflicting one; throws on any other error.
   * Exclusive unless `shared` is set. `length` 0 means to the end of the file.
   */
  export function tryLock(fd: number, offset?: number, length?: number, opts?: { shared?: boolean }): boolean;
  export function unlock(fd: number, offset?: number, length?: number): void;
}
