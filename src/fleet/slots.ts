/**
 * At most `limit` tasks at once, first come first served: the coordinator's orders (enough
 * to keep the CA busy without a campaign of thousands opening thousands of orders and their
 * polls at the same moment) and the channel's authentications (below the database pool, so
 * a reconnect storm waits here instead of timing out in the pool).
 */
export class Slots {
  readonly limit: number;
  #free: number;
  readonly #waiting: (() => void)[] = [];

  constructor(limit: number) {
    this.limit = Math.max(1, limit);
    this.#free = this.limit;
  }

  /** Resolves with the release of a slot once one is free. */
  async acquire(): Promise<() => void> {
    if (this.#free > 0) this.#free -= 1;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    return this.#release();
  }

  /** The release of a slot free now, or undefined (none is: the caller does not wait here, nor jump the queue). */
  tryAcquire(): (() => void) | undefined {
    if (this.#free <= 0) return undefined;
    this.#free -= 1;
    return this.#release();
  }

  #release(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free += 1;
    };
  }

  /** Runs `task` in a slot, released when it settles. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await task();
    } finally {
      release();
    }
  }
}
