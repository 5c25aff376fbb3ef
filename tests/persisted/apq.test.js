// Apollo Client, with `@apollo/client/link/persisted-queries` as frontend teams configure it, against a real Folio:
// the first request of a document sends its hash alone, Folio answers PERSISTED_QUERY_NOT_FOUND, the link retries
// with the text, and from then on every client sends the hash only, over POST and (useGETForHashedQueries) GET.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client/core/index.js';
import { createPersistedQueryLink } from '@apollo/client/link/persisted-queries/index.js';

import { Folio } from '../support/folio.js';

const sha256 = (text) => createHash('sha256').update(text).digest('hex');

const FEED = gql`
  query Feed($first: Int!) {
    posts(first: $first) {
      totalCount
      nodes {
        id
        title
      }
    }
  }
`;

let folio;

before(async () => {
  folio = await Folio.start({ FOLIO_DOCUMENTS: 'open' });
});

after(async () => {
  await folio?.stop();
});

/** A client whose every HTTP request is recorded: method, body (POST) or query parameters (GET). */
function client({ get = false } = {}) {
  const sent = [];
  const recordingFetch = async (url, init) => {
    const u = new URL(url);
    sent.push({
      method: init?.method ?? 'GET',
      body: init?.body ? JSON.parse(init.body) : Object.fromEntries(u.searchParams),
    });
    return fetch(url, init);
  };
  const link = createPersistedQueryLink({ sha256, useGETForHashedQueries: get }).concat(
    new HttpLink({ uri: `${folio.url}/graphql`, fetch: recordingFetch }),
  );
  return { apollo: new ApolloClient({ link, cache: new InMemoryCache() }), sent };
}

const hasText = (req) => typeof req.body.query === 'string' && req.body.query.length > 0;

test('a document is registered once, then sent by hash only, by every client', async () => {
  const first = client();
  const { data } = await first.apollo.query({ query: FEED, variables: { first: 2 }, fetchPolicy: 'network-only' });
  assert.equal(data.posts.totalCount, 0);
  assert.equal(first.sent.length, 2, 'a miss, then the retry with the text');
  assert.equal(hasText(first.sent[0]), false);
  assert.match(first.sent[0].body.extensions.persistedQuery.sha256Hash, /^[0-9a-f]{64}$/);
  assert.equal(hasText(first.sent[1]), true);

  await first.apollo.query({ query: FEED, variables: { first: 3 }, fetchPolicy: 'network-only' });
  assert.equal(first.sent.length, 3);
  assert.equal(hasText(first.sent[2]), false, 'known now: the hash alone');

  // Another client (another browser) sends the hash alone and is answered at once.
  const second = client();
  const again = await second.apollo.query({ query: FEED, variables: { first: 2 }, fetchPolicy: 'network-only' });
  assert.deepEqual(again.data, data);
  assert.equal(second.sent.length, 1);
  assert.equal(hasText(second.sent[0]), false);
});

test('hashed queries over GET are answered by hash, cacheable', async () => {
  const viaGet = client({ get: true });
  const COUNT = gql`
    query Count {
      posts {
        totalCount
      }
    }
  `;
  await viaGet.apollo.query({ query: COUNT, fetchPolicy: 'network-only' });
  await viaGet.apollo.query({ query: COUNT, fetchPolicy: 'network-only' });
  const gets = viaGet.sent.filter((r) => r.method === 'GET');
  assert.ok(gets.length >= 2, JSON.stringify(viaGet.sent));
  const last = viaGet.sent.at(-1);
  assert.equal(last.method, 'GET');
  assert.equal(last.body.query, undefined, 'the last GET carries no text');

  // The same GET by hash from plain HTTP: cacheable, with an ETag.
  const hash = JSON.parse(last.body.extensions).persistedQuery.sha256Hash;
  const params = new URLSearchParams({ extensions: JSON.stringify({ persistedQuery: { version: 1, sha256Hash: hash } }) });
  const res = await fetch(`${folio.url}/graphql?${params}`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('cache-control'), /max-age=/);
  assert.ok(res.headers.get('etag'));
});
