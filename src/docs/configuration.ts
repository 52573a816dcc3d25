/**
 * docs/reference/configuration.md, rendered from the zod schema loadConfig validates with:
 * a variable's default comes from the schema and its meaning from its description, so the page
 * lists exactly the variables certplane reads. test/docs/generated.test.ts fails when the
 * committed page is stale (`npm run docs` rewrites it). Pure: no I/O.
 */
import { CONFIGURATION_SCHEMA } from '../config/config.js';

const HEADER = `# Configuration

<!-- Generated from the schema in src/config/config.ts by \`npm run docs\`; edit the schema's descriptions, not this page. -->

For whoever runs \`certplane serve\` (and the one-shot \`certplane issue\`). Environment
variables only, validated at start-up; an invalid value stops the command with
\`CONFIG_INVALID\` naming every bad variable. Empty values count as unset. The agent is
configured by its command-line options instead ([CLI reference](cli.md)).
`;

const FOOTER = `## Settings that reload

Environment variables cannot change under a running process, so what changes without a
restart lives in files, re-read by SIGHUP and by \`certplane admin reload-trust --reason R\`
(each process reloads its own; \`systemctl reload\` signals them):

- the PEM file of every trust profile (\`CERTPLANE_TRUST_STORE\`, the paths of
  \`CERTPLANE_TRUST_PROFILES\` and of the trust file's \`profiles\`), and
- the trust file (\`CERTPLANE_TRUST_FILE\`): its profiles, \`preferredChains\` and
  \`distrustedSpki\`.

The variables themselves (which file, \`CERTPLANE_CHAIN_FALLBACK\`, and the preferences or
distrust list when they are not in the trust file) are read at start only. SIGHUP also
re-reads the listener's certificate and key (\`CERTPLANE_TLS_CERT\`, \`CERTPLANE_TLS_KEY\`).

AWS clients (Secrets Manager, Route 53) take region and credentials from the SDK's
standard chain (\`AWS_REGION\`, \`AWS_PROFILE\`, instance roles, ...).

A node that starts with settings other than the ones it last recorded writes a
\`config.change\` row to the audit trail ([Operations](../operations.md#audit-trail)).
`;

/** What a zod schema keeps of a variable's default, read without parsing anything. */
interface VariableSchema {
  readonly description?: string;
  readonly meta?: () => { readonly shownDefault?: string } | undefined;
  readonly _zod: { readonly def: { readonly type: string; readonly defaultValue?: unknown } };
}

function shownDefault(variable: VariableSchema): string {
  const shown = variable.meta?.()?.shownDefault;
  if (shown !== undefined) return shown;
  const { type, defaultValue } = variable._zod.def;
  if (type !== 'default' && type !== 'prefault') return 'none';
  const value = typeof defaultValue === 'function' ? (defaultValue as () => unknown)() : defaultValue;
  if (Array.isArray(value)) return value.length === 0 ? 'none' : value.map((item) => `\`${String(item)}\``).join(', ');
  return `\`${String(value)}\``;
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

export function renderConfigurationReference(): string {
  const rows = Object.entries(CONFIGURATION_SCHEMA.shape as Record<string, unknown>).map(([name, schema]) => {
    const variable = schema as VariableSchema;
    if (!variable.description) throw new Error(`${name} has no description in src/config/config.ts`);
    return `| \`${name}\` | ${cell(shownDefault(variable))} | ${cell(variable.description)} |`;
  });
  return [HEADER, '| variable | default | meaning |', '|---|---|---|', ...rows, '', FOOTER].join('\n');
}
