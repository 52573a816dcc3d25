/**
 * The documentation's links hold: the README is a landing page and docs/ is laid out by
 * reader (issue 10), so a page moved or a heading renamed must not leave a reader at a
 * dead link. Markdown is read as GitHub renders it: links inside code are not links, and
 * anchors are GitHub's heading slugs.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, stat } from 'node:fs/promises';
import { test } from 'node:test';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Tests run from dist/test/docs; the repository root is three levels up. */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const README_MAX_LINES = 200;

async function markdownFiles(): Promise<string[]> {
  const found = [join(ROOT, 'README.md')];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.name.endsWith('.md')) found.push(path);
    }
  };
  await walk(join(ROOT, 'docs'));
  return found.sort();
}

/** The text GitHub renders as prose: fenced code blocks and inline code spans removed. */
function prose(markdown: string): string[] {
  const lines: string[] = [];
  let fence: string | undefined;
  for (const line of markdown.split('\n')) {
    const opener = /^\s*(`{3,}|~{3,})/.exec(line)?.[1];
    if (fence) {
      if (opener && opener[0] === fence[0] && opener.length >= fence.length) fence = undefined;
      lines.push('');
    } else if (opener) {
      fence = opener;
      lines.push('');
    } else {
      lines.push(line.replace(/(`+)[^`]*?\1/g, ''));
    }
  }
  return lines;
}

interface Link {
  readonly line: number;
  readonly target: string;
}

/** Inline links and images, `[text](target)` or `[text](target "title")`, outside code. */
function links(markdown: string): Link[] {
  const found: Link[] = [];
  prose(markdown).forEach((text, index) => {
    for (const match of text.matchAll(/!?\[(?:[^[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      found.push({ line: index + 1, target: match[1]! });
    }
  });
  return found;
}

/** GitHub's anchor for a heading's text: lower-case, punctuation but '-' and '_' dropped, each space a '-'. */
function slug(heading: string): string {
  const rendered = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/`([^`]*)`/g, '$1')
    .replace(/(\*\*|__|\*)/g, '')
    .trim();
  return rendered
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\p{M}\s_-]/gu, '')
    .replace(/ /g, '-');
}

/** Every anchor a Markdown file offers, repeated headings numbered as GitHub does (-1, -2...). */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const result = new Set<string>();
  for (const line of prose(markdown)) {
    const heading = /^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)?.[1];
    if (heading === undefined) continue;
    const base = slug(heading);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    result.add(count === 0 ? base : `${base}-${count}`);
  }
  return result;
}

const isExternal = (target: string) => /^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//');

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Where a relative link leads: the file (absolute) and the anchor, if any. */
function resolveLink(from: string, target: string): { file: string; anchor: string | undefined } {
  const hash = target.indexOf('#');
  const pathPart = hash === -1 ? target : target.slice(0, hash);
  const anchor = hash === -1 ? undefined : decodeURIComponent(target.slice(hash + 1));
  const file = pathPart === '' ? from : resolve(dirname(from), decodeURIComponent(pathPart));
  return { file, anchor };
}

const shown = (path: string) => relative(ROOT, path) || '.';

test('GitHub heading slugs: lower-case, spaces to "-", punctuation other than "-" and "_" dropped', () => {
  assert.equal(slug('How a chain is chosen'), 'how-a-chain-is-chosen');
  assert.equal(slug('What `infra/setup.sh` does'), 'what-infrasetupsh-does');
  assert.equal(slug('Security: who may call it, and what it never keeps'), 'security-who-may-call-it-and-what-it-never-keeps');
  assert.equal(slug('snake_case and kebab-case'), 'snake_case-and-kebab-case');
  assert.equal(slug('The `certplane` command'), 'the-certplane-command');
  assert.deepEqual([...anchors('# A\n## A\n```\n# not a heading\n```\n## B?\n')], ['a', 'a-1', 'b']);
});

test('links inside code are not links; titles and angle brackets are not part of the target', () => {
  const found = links('see [a](a.md) and `[b](b.md)`\n```\n[c](c.md)\n```\n[d](<d.md> "D") ![e](img/e.png)\n');
  assert.deepEqual(
    found.map((l) => l.target),
    ['a.md', 'd.md', 'img/e.png'],
  );
});

test('every relative link in README.md and docs/ leads to an existing file inside the repository, and every #anchor to a heading', async () => {
  const files = await markdownFiles();
  const problems: string[] = [];
  let checked = 0;
  for (const file of files) {
    const text = await readFile(file, 'utf8');
    for (const { line, target } of links(text)) {
      if (isExternal(target)) continue;
      checked += 1;
      const where = `${shown(file)}:${line}: ${target}`;
      const { file: to, anchor } = resolveLink(file, target);
      if (relative(ROOT, to).startsWith(`..${sep}`) || relative(ROOT, to) === '..') {
        problems.push(`${where}: leads outside the repository`);
        continue;
      }
      if (!(await exists(to))) {
        problems.push(`${where}: ${shown(to)} does not exist`);
        continue;
      }
      if (anchor !== undefined && to.endsWith('.md')) {
        const offered = anchors(await readFile(to, 'utf8'));
        if (!offered.has(anchor)) problems.push(`${where}: ${shown(to)} has no heading with the anchor #${anchor} (it has: ${[...offered].join(', ')})`);
      }
    }
  }
  assert.ok(checked >= 30, `only ${checked} relative links found in ${files.length} files: is the link reader broken?`);
  assert.deepEqual(problems, [], problems.join('\n'));
});

test(`README.md is a landing page of at most ${README_MAX_LINES} lines`, async () => {
  const lines = (await readFile(join(ROOT, 'README.md'), 'utf8')).replace(/\n$/, '').split('\n').length;
  assert.ok(lines <= README_MAX_LINES, `README.md has ${lines} lines; move detail into docs/`);
});

test('README.md still holds the test command CI runs (.ci/run)', async () => {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  const ci = await readFile(join(ROOT, '.ci', 'run'), 'utf8');
  for (const command of ['bash infra/setup.sh && npm test', 'bash infra/setup.sh && npm run demo']) {
    assert.ok(readme.includes(command), `README.md no longer shows "${command}"`);
  }
  assert.ok(ci.includes('bash infra/setup.sh && npm test'), '.ci/run no longer runs the README\'s test command');
});

test('no page of the documentation refers to files outside the repository (../shared)', async () => {
  const offenders: string[] = [];
  for (const file of await markdownFiles()) {
    (await readFile(file, 'utf8')).split('\n').forEach((text, index) => {
      if (text.includes('../shared')) offenders.push(`${shown(file)}:${index + 1}: ${text.trim()}`);
    });
  }
  assert.deepEqual(offenders, [], offenders.join('\n'));
});

test('every page in docs/ is at most two clicks from README.md', async () => {
  const readme = join(ROOT, 'README.md');
  const reached = new Set<string>([readme]);
  let frontier = [readme];
  for (let click = 0; click < 2; click += 1) {
    const next: string[] = [];
    for (const file of frontier) {
      for (const { target } of links(await readFile(file, 'utf8'))) {
        if (isExternal(target)) continue;
        const { file: to } = resolveLink(file, target);
        if (to.endsWith('.md') && !reached.has(to) && (await exists(to))) {
          reached.add(to);
          next.push(to);
        }
      }
    }
    frontier = next;
  }
  const unreached = (await markdownFiles()).filter((file) => !reached.has(file)).map(shown);
  assert.deepEqual(unreached, [], `not reachable from README.md within two clicks: ${unreached.join(', ')}`);
});
