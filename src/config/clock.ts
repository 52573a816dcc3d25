/**
 * The service's one clock. Production reads the system time; tests (and rehearsals of
 * a renewal wave) can move time forward for every process at once by writing an offset in
 * milliseconds to CERTPLANE_CLOCK_OFFSET_FILE, instead of waiting months.
 */
import { readFileSync, statSync } from 'node:fs';

export type Clock = () => Date;

export const systemClock: Clock = () => new Date();

/** A clock `offset` ms ahead of the system's, the offset read from `path` whenever the file changes. */
export function offsetFileClock(path: string): Clock {
  let mtime = -1;
  let offset = 0;
  return () => {
    try {
      const stat = statSync(path);
      if (stat.mtimeMs !== mtime) {
        mtime = stat.mtimeMs;
        const value = Number(readFileSync(path, 'utf8').trim());
        offset = Number.isFinite(value) ? value : 0;
      }
    } catch {
      offset = 0;
    }
    return new Date(Date.now() + offset);
  };
}
