/** Counting a store's calls, for tests that assert what a step costs without timing it. */

import type { Store } from '../../src/store/types.js';

/**
 * The store with every call of a namespaced method (store.certificates.open, ...) counted by
 * name, and by name and first argument in `callsWith` (`certificates.open <instance id>`),
 * for a test that shares its store with others' records.
 */
export function countingStore(store: Store): { store: Store; calls: Map<string, number>; callsWith: Map<string, number>; total(): number } {
  const calls = new Map<string, number>();
  const callsWith = new Map<string, number>();
  const wrap = (namespace: string, target: object) =>
    new Proxy(target, {
      get(object, property, receiver) {
        const value = Reflect.get(object, property, receiver);
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          const name = `${namespace}.${String(property)}`;
          calls.set(name, (calls.get(name) ?? 0) + 1);
          const withFirst = `${name} ${String(args[0])}`;
          callsWith.set(withFirst, (callsWith.get(withFirst) ?? 0) + 1);
          return (value as (...a: unknown[]) => unknown).apply(object, args);
        };
      },
    });
  const counted = new Proxy(store, {
    get(object, property, receiver) {
      const value = Reflect.get(object, property, receiver);
      if (typeof value === 'function') return (...args: unknown[]) => (calls.set(String(property), (calls.get(String(property)) ?? 0) + 1), (value as (...a: unknown[]) => unknown).apply(object, args));
      return typeof value === 'object' && value !== null ? wrap(String(property), value) : value;
    },
  });
  return { store: counted, calls, callsWith, total: () => [...calls.values()].reduce((sum, n) => sum + n, 0) };
}
