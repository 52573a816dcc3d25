/** Renders reports as the text an on-call engineer reads in a terminal or a log line. */
import type { ChainProblem } from './problems.js';
import type { SelectionResult } from './select.js';
import type { VerificationReport } from './verify.js';

/** A multi-line, human-readable account of one verification. */
export function explainReport(report: VerificationReport): string {
  const lines = [`${report.ok ? 'VERIFIED' : 'NOT VERIFIED'} at ${report.evaluatedAt}`];
  for (const [depth, cert] of report.path.entries()) {
    lines.push(`  ${depth}: ${cert.subjectCN}  (issuer ${cert.issuerCN}, not after ${cert.notAfter}, sha256 ${cert.fingerprintSha256.slice(0, 16)}…)`);
  }
  if (report.anchor) lines.push(`  anchor: ${report.anchor.subjectCN}  (key sha256:${report.anchor.spkiSha256})`);
  lines.push(...problemLines('error', report.errors), ...problemLines('warning', report.warnings));
  return lines.join('\n');
}

/** A summary of a chain selection: which chain, and why every other was refused. */
export function explainSelection(result: SelectionResult, names: readonly string[]): string {
  const lines = result.chains.map((c) => {
    const mark = c.index === result.selected ? '*' : ' ';
    const why = c.index === result.selected ? (result.fallbackUsed ? 'chosen by the default-chain fallback' : `chosen for "${result.preference}"`) : c.errors.map((e) => e.message).join('; ');
    return `${mark} [${c.index}] ${names[c.index] ?? ''}: top issuer "${c.topIssuer}", verifies to ${c.anchor ? `"${c.anchor}"` : 'nothing trusted'}; ${why}`;
  });
  return lines.join('\n');
}

function problemLines(kind: string, problems: readonly ChainProblem[]): string[] {
  return problems.map((p) => `  ${kind} ${p.code}: ${p.message}`);
}
