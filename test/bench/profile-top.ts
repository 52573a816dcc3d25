/**
 * The heaviest functions of a .cpuprofile by self time, and the heaviest call paths into
 * them: `node dist/test/bench/profile-top.js FILE [N]`.
 */
import { readFileSync } from 'node:fs';

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
const profile = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
const top = Number(process.argv[3] ?? 30);
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const parent = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
const selfMs = new Map<number, number>();
profile.samples.forEach((id, i) => selfMs.set(id, (selfMs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000));
const total = [...selfMs.values()].reduce((a, b) => a + b, 0);
const name = (node: Node) => `${node.callFrame.functionName || '(anonymous)'} ${node.callFrame.url.replace(/^.*\/(node_modules|src|dist)\//, '$1/')}:${node.callFrame.lineNumber + 1}`;
const self = new Map<string, number>();
const inclusive = new Map<string, number>();
for (const [id, ms] of selfMs) {
  const node = byId.get(id)!;
  self.set(name(node), (self.get(name(node)) ?? 0) + ms);
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const n = name(byId.get(at)!);
    if (seen.has(n)) continue;
    seen.add(n);
    inclusive.set(n, (inclusive.get(n) ?? 0) + ms);
  }
}
const print = (title: string, map: Map<string, number>) => {
  console.log(`\n${title} (of ${(total / 1000).toFixed(1)} s sampled)`);
  for (const [n, ms] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${(ms / 1000).toFixed(2).padStart(8)} s ${((100 * ms) / total).toFixed(1).padStart(5)}%  ${n}`);
};
print('self time', self);
print('inclusive time', inclusive);

/** Where a frame's code lives: a package (node_modules/NAME), a room of src/, Node's own modules, or the engine (GC, idle, native). */
const placeOf = (node: Node): string => {
  const url = node.callFrame.url;
  // The last node_modules/ and the last src/ of the path: a nested dependency is its own package, and a checkout under some other src/ still finds its rooms.
  const pkg = [...url.matchAll(/node_modules\/((?:@[^/]+\/)?[^/]+)/g)].at(-1);
  if (pkg) return `package ${pkg[1]}`;
  const at = url.lastIndexOf('/src/');
  if (at >= 0) return `room ${url.slice(at + '/src/'.length).split('/')[0]!.replace(/\.js$/, '')}`;
  if (url.startsWith('node:')) return `node ${url.slice(5).split('/')[0]}`;
  return url === '' ? `engine ${node.callFrame.functionName || '(anonymous)'}` : `other ${url}`;
};
/** Self time by place, and by the place of the nearest src/ frame above it: which room's work paid for the package time. */
const byPlace = new Map<string, number>();
const byRoom = new Map<string, number>();
for (const [id, ms] of selfMs) {
  const node = byId.get(id)!;
  byPlace.set(placeOf(node), (byPlace.get(placeOf(node)) ?? 0) + ms);
  let room = 'no room of src/ above';
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const place = placeOf(byId.get(at)!);
    if (place.startsWith('room ')) {
      room = place;
      break;
    }
  }
  byRoom.set(room, (byRoom.get(room) ?? 0) + ms);
}
print('self time by place', byPlace);
print('self time by the nearest room of src/ above it', byRoom);
