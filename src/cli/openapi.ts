/** `certplane openapi [--out FILE]`: prints or writes the API document generated from the route schemas. */
import { renderOpenApi } from '../api/openapi.js';
import { ExitCode, parse, usageError, type Io } from './args.js';
import { writeAtomically } from './issue.js';

const USAGE = 'usage: certplane openapi [--out openapi.yaml]';

export async function openapi(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, { out: { type: 'string' } }, USAGE);
  if (positionals.length > 0) throw usageError('openapi takes no positional arguments', USAGE);
  const document = await renderOpenApi();
  if (values.out) await writeAtomically(values.out, document);
  else io.stdout.write(document);
  return ExitCode.OK;
}
