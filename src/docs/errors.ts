/**
 * docs/reference/errors.md, rendered from the error catalogue so the page cannot drift from
 * what the code answers; test/docs/generated.test.ts fails when the committed page is stale
 * (`npm run docs` rewrites it). Pure: no I/O.
 */
import { CloseCode } from '../channel/protocol.js';
import { CATALOGUE_ENTRIES, ChannelCloseCode, FailureExitCode, KIND_MEANINGS, STATUS_BY_KIND, channelCloseOf, exitCodeOf, httpStatusOf, type ErrorKind } from '../error-catalogue.js';

const HEADER = `# Error codes

<!-- Generated from src/error-catalogue.ts by \`npm run docs\`; edit the catalogue, not this page. -->

Every error certplane reports carries a stable UPPER_SNAKE code, a message a person can act
on and structured \`details\`: in the API as \`{code, message, details?}\` (see the
[API reference](api.md#errors)), on the command line as \`certplane: CODE: message\`
([CLI reference](cli.md#exit-codes-and-errors)), and on the agent channel as the close reason
\`CODE: message\`. Each code has a kind, and the kind decides the HTTP status and the exit code;
the HTTP status is given for every code, though many are never answered over HTTP.
`;

/** A table cell: pipes would end the cell, line breaks the row. */
function cell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

export function renderErrorReference(): string {
  const kinds = Object.keys(KIND_MEANINGS) as ErrorKind[];
  const kindRows = kinds.map((kind) => `| ${kind} | ${STATUS_BY_KIND[kind]} | ${kind === 'bad-input' ? FailureExitCode.BAD_INPUT : FailureExitCode.FAILED} | ${cell(KIND_MEANINGS[kind])} |`);
  const entries = [...CATALOGUE_ENTRIES].sort((a, b) => a.code.localeCompare(b.code));
  const codeRows = entries.map((entry) => `| \`${entry.code}\` | ${entry.kind} | ${httpStatusOf(entry.code)} | ${exitCodeOf(entry.code)} | ${cell(entry.meaning)} |`);
  const authentication = entries.filter((entry) => channelCloseOf(entry.code) === ChannelCloseCode.AUTH_FAILED).map((entry) => `\`${entry.code}\``);
  return [
    HEADER,
    '## Kinds',
    '',
    '| kind | HTTP | exit | meaning |',
    '|---|---|---|---|',
    ...kindRows,
    '',
    'A few codes have a more precise HTTP status than their kind (413, 414, 415); the table below gives',
    'each code\'s own. Exit code 0 is success; 1 is also the answer "no" of `chain verify` and `chain select`.',
    '',
    '## The agent channel',
    '',
    `The plane closes an agent's channel with close code ${ChannelCloseCode.AUTH_FAILED} for ${authentication.join(' and ')}`,
    `(the agent says to enroll again when the reason is \`AGENT_REVOKED\`), and ${ChannelCloseCode.PROTOCOL_ERROR} for any other code.`,
    `A live session whose agent certificate is revoked is cut with ${CloseCode.REVOKED}, a session replaced by a newer`,
    `connection of the same agent with ${CloseCode.REPLACED}, and shutdown closes with ${CloseCode.SHUTDOWN}.`,
    '',
    '## Codes',
    '',
    '| code | kind | HTTP | exit | meaning |',
    '|---|---|---|---|---|',
    ...codeRows,
    '',
  ].join('\n');
}
