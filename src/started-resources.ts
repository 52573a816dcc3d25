/**
 * What a start-up has brought up so far, as a stack: each step that opens something
 * pushes how to close it, and one call closes them all in reverse order. The composition
 * root uses the same stack for a failed start and for shutdown, so a resource added to
 * start-up cannot be forgotten on either path: a timer or socket left behind by a failed
 * start keeps a process alive that a supervisor believes is starting.
 */
import { CertplaneError } from './errors.js';
import { ErrorCode } from './error-catalogue.js';

/** A stack of close steps, closed last-started first. */
export class StartedResources {
  private readonly started: { readonly name: string; readonly close: () => unknown }[] = [];

  /** Records that `name` is running and how to close it; call right after it started, before anything else can fail. */
  add(name: string, close: () => unknown): void {
    this.started.push({ name, close });
  }

  /**
   * Closes everything in reverse order of start. A failing close does not stop the
   * others; the failures are reported together afterwards. A second call closes
   * nothing, so shutdown and a failed start may both call it.
   */
  async closeAll(): Promise<void> {
    const failures: { name: string; error: unknown }[] = [];
    for (const { name, close } of this.started.splice(0).reverse()) {
      try {
        await close();
      } catch (error) {
        failures.push({ name, error });
      }
    }
    if (failures.length > 0) {
      const list = failures.map(({ name, error }) => `${name} (${(error as Error).message})`).join('; ');
      throw new CertplaneError(ErrorCode.SHUTDOWN_INCOMPLETE, `could not close: ${list}; the rest was closed`, { failed: failures.map((f) => f.name) }, { cause: failures[0]?.error });
    }
  }
}
