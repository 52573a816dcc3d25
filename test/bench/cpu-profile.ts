/**
 * A CPU profile of the process it is preloaded into, for the benches: Node refuses
 * `--cpu-prof` in NODE_OPTIONS, but takes `--import`, so
 * `BENCH_PLANE_NODE_OPTIONS="--import=$PWD/dist/test/bench/cpu-profile.js"` with
 * BENCH_CPU_PROFILE_DIR profiles a plane the bench starts; the profile is written when
 * the process is told to stop (SIGTERM) or exits (a .cpuprofile file for Chrome's DevTools or test/bench/profile-top.ts),
 * named plane-PID, or BENCH_CPU_PROFILE_NAME-PID.
 */
import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const session = new Session();
session.connect();
session.post('Profiler.enable');
session.post('Profiler.setSamplingInterval', { interval: 1000 });
session.post('Profiler.start');
let written = false;
/** Stops profiling and writes the profile, once: at SIGTERM (a plane slow to stop may be killed before it exits) or at exit. */
const write = () => {
  if (written) return;
  written = true;
  // Same-thread inspector sessions answer synchronously, so this finishes inside 'exit'.
  session.post('Profiler.stop', (error, result) => {
    if (!error) writeFileSync(join(process.env.BENCH_CPU_PROFILE_DIR ?? '.', `${process.env.BENCH_CPU_PROFILE_NAME ?? 'plane'}-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
  });
};
process.on('SIGTERM', write);
process.on('exit', write);
