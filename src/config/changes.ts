/**
 * What a configuration looks like in the audit trail: every setting flattened to a dotted
 * key, credentials removed, and the settings that differ from the last configuration a
 * node recorded.
 */
import { redactUrl, type AuditStore } from '../store/index.js';
import type { Config } from './config.js';

export type Setting = string | number | boolean | null | readonly string[];
export type ConfigurationSummary = Readonly<Record<string, Setting>>;

/** Every setting of `config` under a dotted key, in a stable order; the database URL without its password. */
export function summarizeConfiguration(config: Config): ConfigurationSummary {
  const out: Record<string, Setting> = {};
  const walk = (value: unknown, path: string) => {
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      for (const key of Object.keys(value).sort()) walk((value as Record<string, unknown>)[key], path ? `${path}.${key}` : key);
      return;
    }
    out[path] = value === undefined ? null : Array.isArray(value) ? value.map(String) : (value as Setting);
  };
  walk({ ...config, server: { ...config.server, databaseUrl: redactUrl(config.server.databaseUrl) } }, '');
  return out;
}

export interface SettingChange {
  readonly from: Setting | undefined;
  readonly to: Setting | undefined;
}

/** The settings whose values differ between two summaries (absent on one side shows as undefined). */
export function configurationChanges(previous: ConfigurationSummary, next: ConfigurationSummary): Record<string, SettingChange> {
  const changes: Record<string, SettingChange> = {};
  for (const key of [...new Set([...Object.keys(previous), ...Object.keys(next)])].sort()) {
    if (JSON.stringify(previous[key]) !== JSON.stringify(next[key])) changes[key] = { from: previous[key], to: next[key] };
  }
  return changes;
}

/**
 * A node that starts with settings other than the ones it last recorded has had its
 * configuration changed: the trail gets who started it, which settings changed and the
 * whole (credential-free) configuration. Returns the changed keys, or undefined when
 * nothing changed. A node is a host and a listen address.
 */
export async function auditConfiguration(audit: Pick<AuditStore, 'latest' | 'record'>, config: Config, who: { node: string; actor: string }): Promise<string[] | undefined> {
  const configuration = summarizeConfiguration(config);
  const last = await audit.latest('config.change', who.node);
  const previous = (last?.details as { configuration?: ConfigurationSummary } | null)?.configuration ?? {};
  const changed = configurationChanges(previous, configuration);
  if (last && Object.keys(changed).length === 0) return undefined;
  await audit.record({
    actor: who.actor,
    action: 'config.change',
    target: who.node,
    reason: last ? 'started with settings that differ from the ones last recorded' : 'first start of this node',
    details: { changed, configuration },
  });
  return Object.keys(changed);
}
