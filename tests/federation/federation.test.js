// Folio as an Apollo Federation 2 subgraph, proven behind a real gateway: a running Folio and a second subgraph
// (`analytics`, @apollo/subgraph) are composed with @apollo/composition and served by @apollo/gateway +
// @apollo/server. Queries cross the subgraphs both ways, with and without a bearer token, and Folio's
// `/metrics` shows that resolving a page of 50 entity representations costs one statement per entity type.
//
// Run: `npm ci && npm test` in this directory (builds Folio with cargo unless `FOLIO_BIN` names a binary).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { composeServices } from '@apollo/composition';
import { ApolloGateway, IntrospectAndCompose, RemoteGraphQLDataSource } from '@apollo/gateway';
import { ApolloServer } from '@apollo/server';
import { startStandaloneServer } from '@apollo/server/standalone';
import { buildSchema, parse } from 'graphql';

import { followerCount, startAnalytics, viewCount } from './analytics.js';
import { Folio } from '../support/folio.js';

const PASSWORD = 'correct horse battery staple';

/** What the suite creates in Folio, through Folio's own API. */
const seeded = { alice: null, bob: null, published: [], draft: null };

let folio;
let analytics;
let gateway;
let gatewayUrl;

/** POSTs an operation to the gateway, forwarding `token` as a bearer token; returns the JSON body. */
async function viaGateway(query, variables = {}, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(gatewayUrl, { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
  return res.json();
}

/** Like `viaGateway`, but errors fail the test. Returns `data`. */
async function mustViaGateway(query, variables = {}, token) {
  const body = await viaGateway(query, variables, token);
  assert.equal(body.errors, undefined, `gateway answered errors: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/** How many SQL statements Folio ran while `work` ran. */
async function folioStatementsDuring(work) {
  const before = await folio.statements();
  const result = await work();
  return { result, statements: (await folio.statements()) - before };
}

async function seed() {
  const signUp = `mutation($input: SignUpInput!) { signUp(input: $input) { token user { id } } }`;
  for (const [key, name] of [['alice', 'Alice Liddell'], ['bob', 'Bob Marley']]) {
    const { signUp: s } = await folio.must(signUp, {
      input: { email: `${key}@example.com`, name, password: PASSWORD },
    });
    seeded[key] = { id: s.user.id, name, token: s.token };
  }
  const createPost = `mutation($input: CreatePostInput!) { createPost(input: $input) { id } }`;
  for (let i = 0; i < 60; i += 1) {
    const author = i % 2 === 0 ? seeded.alice : seeded.bob;
    const { createPost: p } = await folio.must(
      createPost,
      { input: { title: `Post number ${i}`, content: `What post ${i} has to say.`, published: true } },
      author.token,
    );
    seeded.published.push({ id: p.id, title: `Post number ${i}`, author });
  }
  const { createPost: d } = await folio.must(
    createPost,
    { input: { title: 'Alice draft', content: 'Not ready for anyone to read yet.', published: false } },
    seeded.alice.token,
  );
  seeded.draft = { id: d.id, title: 'Alice draft', author: seeded.alice };
  await folio.must(
    `mutation($input: AddCommentInput!) { addComment(input: $input) { id } }`,
    { input: { postId: seeded.published[0].id, body: 'Great read.' } },
    seeded.bob.token,
  );
}

/** Analytics' ranking: every published post by views, with Alice's draft (read before it was unpublished) second. */
function ranking() {
  const ids = seeded.published.map((p) => p.id).sort((a, b) => viewCount(b) - viewCount(a));
  ids.splice(1, 0, seeded.draft.id);
  return ids;
}

const byId = (id) => [...seeded.published, seeded.draft].find((p) => p.id === id);

describe('Folio behind an Apollo Gateway', () => {
  before(
    async () => {
      folio = await Folio.start();
      await seed();
      analytics = await startAnalytics(ranking());
      gateway = new ApolloServer({
        gateway: new ApolloGateway({
          // The gateway reads each subgraph's `_service { sdl }`, as a production gateway would.
          supergraphSdl: new IntrospectAndCompose({
            subgraphs: [
              { name: 'folio', url: `${folio.url}/graphql` },
              { name: 'analytics', url: analytics.url },
            ],
          }),
          buildService: ({ url }) =>
            new RemoteGraphQLDataSource({
              url,
              // Folio authorizes every request itself: the caller's token must reach it.
              willSendRequest({ request, context }) {
                if (context.authorization) request.http.headers.set('authorization', context.authorization);
              },
            }),
        }),
      });
      ({ url: gatewayUrl } = await startStandaloneServer(gateway, {
        listen: { host: '127.0.0.1', port: 0 },
        context: async ({ req }) => ({ authorization: req.headers.authorization }),
      }));
    },
    { timeout: 15 * 60_000 },
  );

  after(async () => {
    // Each stopped on its own, so one failure does not leave the others running.
    for (const stop of [() => gateway?.stop(), () => analytics?.stop(), () => folio?.stop()]) {
      try {
        await stop();
      } catch (err) {
        console.error('cleanup:', err);
      }
    }
  });

  test("Folio's SDL composes with analytics': no errors, no hints about Folio", async () => {
    const service = (await folio.must('{ _service { sdl } }'))._service.sdl;
    const file = await folio.text('/schema.graphql');
    assert.match(service, /@link\(\s*url: "https:\/\/specs\.apollo\.dev\/federation\/v2\.\d+"/);
    for (const type of ['User', 'Post', 'Comment']) {
      assert.ok(service.includes(`type ${type} @key(fields: "id")`), `${type} is keyed by id`);
    }
    // schema.graphql (served at /schema.graphql) also reads as a plain schema, as code generators need.
    assert.doesNotThrow(() => buildSchema(file));

    const folioTypes = new Set(
      parse(service)
        .definitions.filter((d) => d.name)
        .map((d) => d.name.value),
    );
    for (const [label, sdl] of [
      ['_service { sdl }', service],
      ['schema.graphql', file],
    ]) {
      const result = composeServices([
        { name: 'folio', url: `${folio.url}/graphql`, typeDefs: parse(sdl) },
        { name: 'analytics', url: analytics.url, typeDefs: parse(analytics.sdl) },
      ]);
      assert.deepEqual(result.errors ?? [], [], `${label} composes`);
      const aboutFolio = (result.hints ?? []).filter(
        (h) => /folio/i.test(h.message) || [...folioTypes].some((t) => new RegExp(`\\b${t}\\b`).test(h.message)),
      );
      assert.deepEqual(
        aboutFolio.map((h) => `${h.definition.code}: ${h.message}`),
        [],
        `${label}: no composition hints about Folio's schema`,
      );
      assert.match(result.supergraphSdl, /type Post[^{]*\{[^}]*viewCount: Int!/s);
    }
  });

  // First of the queries: Folio's response cache has seen none of these `_entities` documents yet, so every one
  // is computed and its statements show in /metrics.
  test('analytics → Folio: 50 post representations cost Folio one statement, two with their authors', async () => {
    const { result: data, statements } = await folioStatementsDuring(() =>
      mustViaGateway('query($n: Int!) { topPosts(limit: $n) { id viewCount title } }', { n: 50 }),
    );
    assert.equal(data.topPosts.length, 50);
    assert.equal(data.topPosts[1], null, "Alice's draft is null for an anonymous caller");
    for (const post of data.topPosts.filter(Boolean)) {
      assert.equal(post.title, byId(post.id).title);
      assert.equal(post.viewCount, viewCount(post.id));
    }
    assert.equal(statements, 1, 'one statement for 50 Post representations');

    const { result: withAuthors, statements: withAuthorStatements } = await folioStatementsDuring(() =>
      mustViaGateway('query($n: Int!) { topPosts(limit: $n) { id title author { id name } } }', { n: 50 }),
    );
    for (const post of withAuthors.topPosts.filter(Boolean)) {
      assert.equal(post.author.name, byId(post.id).author.name);
    }
    assert.equal(withAuthorStatements, 2, 'posts, then their authors: one statement each');
  });

  test('Folio → analytics: a page of 50 posts with viewCount and author followerCount', async () => {
    const query = `{ posts(first: 50) { nodes { id title viewCount author { id name followerCount } } } }`;
    const { result: data, statements } = await folioStatementsDuring(() => mustViaGateway(query));
    const nodes = data.posts.nodes;
    assert.equal(nodes.length, 50);
    for (const post of nodes) {
      const known = byId(post.id);
      assert.ok(known && known !== seeded.draft, `a published post: ${post.id}`);
      assert.equal(post.title, known.title);
      assert.equal(post.viewCount, viewCount(post.id));
      assert.equal(post.author.name, known.author.name);
      assert.equal(post.author.followerCount, followerCount(post.author.id));
    }
    assert.equal(statements, 1, "the page with its authors joined in; analytics' fields cost Folio nothing");
  });

  test('without a token: drafts and private fields stay hidden through the gateway', async () => {
    const data = await mustViaGateway(
      '{ topPosts(limit: 6) { id viewCount title author { name email } } posts(first: 100, filter: { drafts: true }) { nodes { id } } }',
    );
    assert.equal(data.topPosts.length, 6);
    assert.equal(data.topPosts[1], null, 'the draft is null');
    for (const post of data.topPosts.filter(Boolean)) {
      assert.equal(post.author.email, null, 'emails are private');
      assert.equal(post.author.name, byId(post.id).author.name);
    }
    const ids = data.posts.nodes.map((n) => n.id);
    assert.equal(ids.length, 60);
    assert.ok(!ids.includes(seeded.draft.id));
  });

  test("with Alice's token (from `login` through the gateway): her draft and her email, nobody else's", async () => {
    const login = await mustViaGateway(
      'mutation($input: LoginInput!) { login(input: $input) { token user { id } } }',
      { input: { email: 'alice@example.com', password: PASSWORD } },
    );
    const token = login.login.token;
    assert.equal(login.login.user.id, seeded.alice.id);

    const data = await mustViaGateway(
      `{ me { name followerCount }
         topPosts(limit: 6) { id viewCount title published author { id email } }
         posts(first: 100, filter: { drafts: true }) { nodes { id viewCount } } }`,
      {},
      token,
    );
    assert.deepEqual(data.me, { name: 'Alice Liddell', followerCount: followerCount(seeded.alice.id) });
    const draft = data.topPosts[1];
    assert.deepEqual(draft, {
      id: seeded.draft.id,
      viewCount: viewCount(seeded.draft.id),
      title: 'Alice draft',
      published: false,
      author: { id: seeded.alice.id, email: 'alice@example.com' },
    });
    for (const post of data.topPosts) {
      const mine = post.author.id === seeded.alice.id;
      assert.equal(post.author.email, mine ? 'alice@example.com' : null, `post ${post.id}`);
    }
    const listed = data.posts.nodes.find((n) => n.id === seeded.draft.id);
    assert.deepEqual(listed, { id: seeded.draft.id, viewCount: viewCount(seeded.draft.id) });

    // Bob, asking the same, gets his own answer: no draft of Alice's, no email but his.
    const bob = await mustViaGateway('{ topPosts(limit: 6) { id author { id email } } }', {}, seeded.bob.token);
    assert.equal(bob.topPosts[1], null);
    for (const post of bob.topPosts.filter(Boolean)) {
      assert.equal(post.author.email, post.author.id === seeded.bob.id ? 'bob@example.com' : null);
    }
  });

  test('a bad token forwarded by the gateway is refused by Folio, not treated as anonymous', async () => {
    const body = await viaGateway('{ topPosts(limit: 3) { id title } }', {}, 'not-a-token');
    assert.ok(
      body.errors?.some((e) => e.extensions?.code === 'UNAUTHENTICATED'),
      `Folio's UNAUTHENTICATED reaches the client: ${JSON.stringify(body.errors)}`,
    );
    assert.ok(
      !body.data?.topPosts?.some((p) => p?.title),
      `no Folio data for a refused token: ${JSON.stringify(body.data)}`,
    );
  });
});
