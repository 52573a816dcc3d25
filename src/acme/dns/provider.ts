/**
 * The one seam between the dns-01 solver and the many DNS services a fleet may use.
 * Like lego's providers, each service lives in its own file behind this tiny interface,
 * so adding one never touches the solver.
 */

/** Publishes and withdraws the TXT records of dns-01 challenges. */
export interface DnsProvider {
  readonly name: string;
  /**
   * Publishes TXT `value` at `fqdn` (e.g. "_acme-challenge.example.com", no trailing dot) and resolves once the record is served by the authoritative servers. Several values may coexist at one name (a wildcard and its base name).
   * `signal` (shutdown, a lost lease) ends the wait for propagation at once, rejecting with the signal's reason; the record stays for cleanUp.
   */
  present(fqdn: string, value: string, signal?: AbortSignal): Promise<void>;
  /** Withdraws exactly that value; never fails because it was already gone. */
  cleanUp(fqdn: string, value: string): Promise<void>;
}

/**
 * Runs the tasks that touch one record name strictly one after another. DNS services
 * replace the whole set of values at a name, so providers read, modify and write it; a
 * wildcard and its base name solved at the same time would otherwise drop each other's value.
 */
export class RecordNameLock {
  readonly #tails = new Map<string, Promise<void>>();

  /** Runs `task` once every earlier task for `name` (compared case-insensitively) has settled. */
  run<T>(name: string, task: () => Promise<T>): Promise<T> {
    const key = name.toLowerCase();
    const result = (this.#tails.get(key) ?? Promise.resolve()).then(task);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(key, tail);
    void tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return result;
  }
}
