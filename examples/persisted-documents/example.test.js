// The example end to end, as a frontend team's CI would run it: generate the typed documents and their manifest
// from Folio's schema.graphql, compile, check the manifest with `folio documents check`, then run the typed
// operations by id against a Folio that runs only those documents.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Folio, folioBinary } from '../../tests/support/folio.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const MANIFEST = join(HERE, 'src', 'gql', 'persisted-documents.json');

function sh(command, args) {
  const out = spawnSync(command, args, { cwd: HERE, encoding: 'utf8' });
  assert.equal(out.status, 0, `${command} ${args.join(' ')}:\n${out.stdout}\n${out.stderr}`);
  return out.stdout;
}

let folio;

before(async () => {
  sh('npx', ['graphql-codegen', '--config', 'codegen.yml']);
  sh('npx', ['tsc', '-p', 'tsconfig.json']);
});

after(async () => {
  await folio?.stop();
});

test('folio documents check validates and prices the generated manifest', () => {
  const table = sh(folioBinary(), ['documents', 'check', MANIFEST]);
  assert.match(table, /Feed\s+sha256:[0-9a-f]+\s+\d+\s+\d+\s+ok/);
  assert.match(table, /Me\s+/);
  assert.match(table, /2 documents checked: all valid/);
  // Against a schema where `Post.author` is gone, the feed document no longer validates.
  const broken = join(HERE, 'dist', 'schema-without-author.graphql');
  const schema = sh(folioBinary(), ['schema']).replace(/\tauthor: User!\n/g, '');
  spawnSync('sh', ['-c', `cat > ${broken}`], { input: schema });
  const out = spawnSync(folioBinary(), ['documents', 'check', '--schema', broken, MANIFEST], { encoding: 'utf8' });
  assert.notEqual(out.status, 0);
  assert.match(out.stdout, /Feed.*invalid/);
});

test('a safelisted Folio runs the typed operations by id, and nothing else', async () => {
  folio = await Folio.start({ FOLIO_DOCUMENTS: 'safelist', FOLIO_DOCUMENTS_MANIFEST: MANIFEST });
  const { run } = await import('./dist/client.js');
  const result = await run(folio.url);
  assert.deepEqual(result, { total: 0, titles: [], me: null });
  const refused = await folio.gql('{ posts { totalCount } }');
  assert.equal(refused.errors?.[0]?.extensions?.code, 'PERSISTED_QUERY_NOT_ALLOWED');
});
