/** Clean-up steps run last-registered first, so a store closes before its database is dropped. */
import type { TestContext } from 'node:test';

type Step = () => Promise<unknown>;
export type Defer = (step: Step) => void;

/** A list of steps to run later, in reverse order of registration. */
export function cleanupList(): { defer: Defer; run(): Promise<void> } {
  const steps: Step[] = [];
  return {
    defer: (step) => void steps.push(step),
    run: async () => {
      for (const step of steps.splice(0).reverse()) await step();
    },
  };
}

/** Steps run after test `t`. */
export function cleanups(t: TestContext): Defer {
  const list = cleanupList();
  t.after(() => list.run());
  return list.defer;
}
