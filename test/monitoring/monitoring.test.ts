/**
 * What infra/monitoring ships, checked with the tools that will read it: the alert rules
 * load in promtool (`check rules`) and each alert fires, and stays quiet, when its sample
 * series say it should (`test rules` with certplane-alerts.test.yml); the Grafana dashboard
 * parses and its queries parse as PromQL; and every certplane metric the rules and the
 * dashboard name is one a live plane (a real `certplane serve`) exports, in Prometheus's
 * naming conventions (`promtool check metrics` finds nothing to say about certplane's own).
 * promtool comes from Debian's prometheus package, which infra/setup.sh installs.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { scratch } from '../support/cli.js';
import { freePort } from '../support/ports.js';
import { startCertplane, type RunningProcess } from '../support/processes.js';

const repository = fileURLToPath(new URL('../../../', import.meta.url));
const monitoring = `${repository}infra/monitoring/`;
const RULES = `${monitoring}certplane-alerts.yml`;
const RULE_TESTS = `${monitoring}certplane-alerts.test.yml`;
const DASHBOARD = `${monitoring}certplane-dashboard.json`;
/** Start-up on PGlite under a loaded test machine can take tens of seconds. */
const START_MS = 240_000;

/** Runs promtool; a missing promtool is a failed set-up, with the fix in the message. */
async function promtool(args: string[], stdin?: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'ENOENT' ? new Error('promtool is not installed: run "bash infra/setup.sh" (Debian\'s prometheus package provides it)') : error),
    );
    child.on('close', (code) => resolve({ code: code ?? -1, output }));
    child.stdin.end(stdin ?? '');
  });
}

const dir = await scratch('certplane-monitoring-');
let plane: RunningProcess;
let exposition = '';

before(async () => {
  const port = await freePort();
  plane = startCertplane(['serve'], {
    CERTPLANE_INSECURE_HTTP: '1',
    CERTPLANE_LISTEN: `127.0.0.1:${port}`,
    CERTPLANE_DATABASE_URL: 'memory:',
    CERTPLANE_SECRETS: `file:${dir.path('secrets')}`,
    // Never contacted: nothing is ordered.
    CERTPLANE_ACME_DIRECTORY: 'https://127.0.0.1:9/dir',
    CERTPLANE_LOG_LEVEL: 'info',
  });
  await plane.waitForLine((line) => line.includes('management plane listening'), START_MS);
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  exposition = await response.text();
});
after(async () => {
  await plane?.stop();
  await dir.remove();
});

/** The metric names a live plane exports: every `# TYPE` line, with a histogram's _bucket, _sum and _count. */
function exported(): Set<string> {
  const names = new Set<string>();
  for (const [, name, type] of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(name!);
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${name}${suffix}`);
  }
  return names;
}

/** The certplane metric names an expression uses. */
const certplaneNames = (expr: string) => [...expr.matchAll(/\bcertplane_[a-z0-9_]+/g)].map((m) => m[0]);

interface RuleFile {
  groups: { name: string; rules: { alert: string; expr: string }[] }[];
}
interface RuleTests {
  rule_files: string[];
  tests: { name: string; alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
}

test('promtool loads the alert rules', async () => {
  const checked = await promtool(['check', 'rules', RULES]);
  assert.equal(checked.code, 0, checked.output);
  assert.match(checked.output, /SUCCESS: 8 rules found/);
});

test('promtool test rules: every alert fires on its sample series and stays quiet where it should', async () => {
  const tested = await promtool(['test', 'rules', RULE_TESTS]);
  assert.equal(tested.code, 0, tested.output);
  assert.match(tested.output, /SUCCESS/);
  const rules = parseYaml(await readFile(RULES, 'utf8')) as RuleFile;
  const cases = (parseYaml(await readFile(RULE_TESTS, 'utf8')) as RuleTests).tests.flatMap((t) => t.alert_rule_test);
  for (const { alert } of rules.groups.flatMap((g) => g.rules)) {
    const own = cases.filter((c) => c.alertname === alert);
    assert.ok(own.some((c) => c.exp_alerts.length > 0), `no test case where ${alert} fires`);
    assert.ok(own.some((c) => c.exp_alerts.length === 0), `no test case where ${alert} stays quiet`);
  }
});

test('a broken rule is caught: promtool test rules fails when an alert fires where its test says it must not', async () => {
  const rules = await readFile(RULES, 'utf8');
  const loosened = await dir.write('certplane-alerts.yml', rules.replace('- time() < 7 * 86400 > 0', '- time() < 30 * 86400 > 0'));
  assert.notEqual(loosened, RULES);
  await dir.write('certplane-alerts.test.yml', await readFile(RULE_TESTS, 'utf8'));
  const tested = await promtool(['test', 'rules', dir.path('certplane-alerts.test.yml')]);
  assert.notEqual(tested.code, 0, tested.output);
  assert.match(tested.output, /CertplaneCertificateExpiringSoon[^]*instance_id="later"/);
});

test('every certplane metric the alert rules use is exported by a live plane', async () => {
  const names = exported();
  const rules = (parseYaml(await readFile(RULES, 'utf8')) as RuleFile).groups.flatMap((g) => g.rules);
  const used = new Set(rules.flatMap((rule) => certplaneNames(rule.expr)));
  assert.ok(used.size >= 5, [...used].join(', '));
  for (const name of used) assert.ok(names.has(name), `an alert uses ${name}, which certplane does not export`);
});

test('the dashboard parses, its queries parse as PromQL, and every certplane metric they use is exported by a live plane', async () => {
  const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { uid: string; panels: { title: string; type: string; targets?: { expr: string }[] }[]; templating: { list: { definition?: string }[] } };
  assert.equal(dashboard.uid, 'certplane-fleet');
  const queries = [
    ...dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((t) => ({ where: `panel "${panel.title}"`, expr: t.expr }))),
    ...dashboard.templating.list.flatMap((v) => (v.definition ? [{ where: 'variable', expr: v.definition.replace(/^label_values\((\w+), \w+\)$/, '$1') }] : [])),
  ];
  assert.ok(queries.length >= 15, `${queries.length} queries`);
  const names = exported();
  const used = new Set(queries.flatMap((q) => certplaneNames(q.expr)));
  assert.ok(used.size >= 10, [...used].join(', '));
  for (const name of used) assert.ok(names.has(name), `the dashboard uses ${name}, which certplane does not export; it exports ${[...names].filter((n) => n.startsWith('certplane_')).join(', ')}`);
  // promtool parses each query as a recording rule's expression (Grafana's variables made concrete).
  const asRules = { groups: [{ name: 'dashboard', rules: queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: q.expr.replaceAll('$cluster', '.*') })) }] };
  const file = await dir.write('dashboard-queries.yml', JSON.stringify(asRules));
  const checked = await promtool(['check', 'rules', file]);
  assert.equal(checked.code, 0, checked.output);
});

test("a live plane's certplane metrics follow Prometheus's naming conventions (promtool check metrics)", async () => {
  assert.match(exposition, /^# TYPE certplane_certificate_expiry_timestamp_seconds gauge$/m);
  const linted = await promtool(['check', 'metrics'], exposition);
  // prom-client's own Node.js runtime metrics draw complaints (gauges named _total); certplane's must draw none.
  const ours = linted.output.split('\n').filter((line) => line.startsWith('certplane_'));
  assert.deepEqual(ours, []);
});

