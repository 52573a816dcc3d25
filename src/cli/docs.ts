/**
 * `certplane docs [--out-dir DIR]`: writes the reference pages generated from the code (the
 * configuration from its zod schema, the error codes from the error catalogue) into DIR, docs/reference by default. Tests fail when
 * the committed pages differ from what this writes.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { renderConfigurationReference } from '../docs/configuration.js';
import { renderErrorReference } from '../docs/errors.js';
import { ExitCode, parse, usageError, type Io } from './args.js';
import { writeAtomically } from './issue.js';

const USAGE = 'usage: certplane docs [--out-dir docs/reference]';

/** The generated pages, by file name. */
export function generatedPages(): Readonly<Record<string, string>> {
  return { 'configuration.md': renderConfigurationReference(), 'errors.md': renderErrorReference() };
}

export async function docs(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, { 'out-dir': { type: 'string', default: join('docs', 'reference') } }, USAGE);
  if (positionals.length > 0) throw usageError('docs takes no positional arguments', USAGE);
  await mkdir(values['out-dir'], { recursive: true });
  for (const [name, text] of Object.entries(generatedPages())) {
    const file = join(values['out-dir'], name);
    await writeAtomically(file, text);
    io.stdout.write(`wrote ${file}\n`);
  }
  return ExitCode.OK;
}
