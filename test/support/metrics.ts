/** Reading Prometheus's text exposition in tests, as a scraper would. */

/** The per-instance series of `name` in an exposition: instance id to [cluster label as written, escapes kept, value]. */
export function instanceSeries(exposition: string, name: string): Map<string, [string, number]> {
  const found = new Map<string, [string, number]>();
  for (const match of exposition.matchAll(new RegExp(`^${name}\\{instance_id="([^"]+)",cluster="((?:[^"\\\\]|\\\\.)*)"\\} (\\S+)$`, 'gm'))) {
    found.set(match[1]!, [match[2]!, Number(match[3])]);
  }
  return found;
}

/** The value of the label-less series `name`, or undefined when there is none. */
export function singleValue(exposition: string, name: string): number | undefined {
  const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(exposition);
  return match ? Number(match[1]) : undefined;
}
