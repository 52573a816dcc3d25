/**
 * The one hostname validator (chain/names.ts) and the one spelling ownership is decided on:
 * what registration stores must be what the CSR check compares, for DNS names and addresses.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkHostname, normaliseDnsName } from '../../src/chain/index.js';

describe('checkHostname', () => {
  test('accepts and normalises DNS names, wildcards, internationalised names and addresses', () => {
    const cases: [raw: string, name: string, type: 'dns' | 'ip'][] = [
      ['DB1.Example.COM.', 'db1.example.com', 'dns'],
      ['*.Example.com', '*.example.com', 'dns'],
      ['Bücher.example', 'xn--bcher-kva.example', 'dns'],
      ['xn--bcher-kva.example', 'xn--bcher-kva.example', 'dns'],
      ['db1.a1', 'db1.a1', 'dns'],
      ['10.0.0.5', '10.0.0.5', 'ip'],
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1', 'ip'],
    ];
    for (const [raw, name, type] of cases) {
      assert.deepEqual(checkHostname(raw), { name, type }, raw);
      // What is stored is what the CSR check computes from any spelling of it.
      assert.equal(normaliseDnsName(raw), name, raw);
      assert.equal(normaliseDnsName(name), name, raw);
    }
  });

  test('refuses what the CA would refuse, saying why', () => {
    for (const [raw, why] of [
      ['', /empty/],
      ['.', /empty/],
      ['com', /single label/],
      ['*.com', /wildcard over a single label/],
      ['*.*.example.com', /leftmost label/],
      ['w*.example.com', /leftmost label/],
      ['a..example.com', /empty label/],
      ['.example.com', /empty label/],
      ['-a.example.com', /label "-a"/],
      ['a-.example.com', /label "a-"/],
      [`${'a'.repeat(64)}.com`, /1 to 63/],
      [`${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}.com`, /more than the 253/],
      ['a b.example.com', /not allowed/],
      ['example.com/path', /not allowed/],
      ['user@example.com', /not allowed/],
      ['[::1]', /not allowed/],
      ['1.2.3.4/24', /not allowed/],
      ['example.123', /all-numeric/],
      ['010.0.0.1', /all-numeric/],
      ['xn--abc.example.com', /IDNA/],
      ['XN--A.0.COM', /IDNA/], // an "xn--" label that does not decode, in capitals (the fuzz test once generated it as valid)
    ] as const) {
      const checked = checkHostname(raw);
      assert.ok('problem' in checked, `${raw} was accepted as ${JSON.stringify(checked)}`);
      assert.match(checked.problem, why, raw);
    }
  });
});
