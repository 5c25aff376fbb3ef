// Live data as frontend clients use it: the npm `graphql-ws` and `graphql-sse` clients against two real Folio
// processes (A and B) on one PostgreSQL database and one Redis. Writes go to one instance; subscribers and live
// queries sit on the other, so every event crosses Redis pub/sub.
//
// Needs FOLIO_TEST_DATABASE_URL (a PostgreSQL server URL; a database of its own is created and dropped) and
// either FOLIO_TEST_REDIS_URL (one Redis server) or FOLIO_TEST_REDIS_CLUSTER_NODES (a Redis Cluster's seed nodes,
// which the instances then share instead), as `.ci/run` sets them: it runs the suite on both.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

import { createClient as createWsClient } from 'graphql-ws';
import { createClient as createSseClient } from 'graphql-sse';
import WebSocket from 'ws';

import { Folio, JWT_SECRET } from '../support/folio.js';

const ADMIN_URL = process.env.FOLIO_TEST_DATABASE_URL;
const CLUSTER_NODES = process.env.FOLIO_TEST_REDIS_CLUSTER_NODES;
const REDIS = CLUSTER_NODES
  ? { FOLIO_REDIS_CLUSTER_NODES: CLUSTER_NODES }
  : { REDIS_URL: process.env.FOLIO_TEST_REDIS_URL };
if (!ADMIN_URL || !(CLUSTER_NODES || process.env.FOLIO_TEST_REDIS_URL)) {
  throw new Error(
    'set FOLIO_TEST_DATABASE_URL (PostgreSQL) and FOLIO_TEST_REDIS_URL or FOLIO_TEST_REDIS_CLUSTER_NODES (Redis): '
    + 'this suite runs two instances on them',
  );
}

const DB = `folio_live_${randomUUID().replaceAll('-', '')}`;
const dbUrl = (name) => {
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
};
const psql = (url, sql) => {
  const run = spawnSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`psql failed: ${run.stderr}`);
  return run.stdout.trim();
};

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

let a;
let b;
const users = {};

/** A Folio token for `id`, signed as Folio signs them, expiring in `ttl` seconds. */
function token(id, ttl = 3600) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub: String(id), role: 'USER', iat: now, exp: now + ttl, iss: 'folio', aud: 'folio' });
  const sig = createHmac('sha256', JWT_SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

async function signUp(name) {
  const email = `${name.toLowerCase()}-${randomUUID().slice(0, 8)}@example.com`;
  const data = await a.must(
    'mutation S($i: SignUpInput!) { signUp(input: $i) { token user { id } } }',
    { i: { email, name, password: 'correct horse battery staple' } },
  );
  return { id: data.signUp.user.id, token: data.signUp.token };
}

before(async () => {
  psql(ADMIN_URL, `CREATE DATABASE ${DB}`);
  const env = {
    DATABASE_URL: dbUrl(DB),
    ...REDIS,
    FOLIO_CACHE_PREFIX: `folio-live-${randomUUID().slice(0, 8)}:`,
    FOLIO_WS_INIT_TIMEOUT_MS: '500',
    FOLIO_LIVE_QUEUE: '8',
  };
  a = await Folio.start(env);
  b = await Folio.start(env);
  users.alice = await signUp('Alice');
  users.bob = await signUp('Bob');
  users.root = await signUp('Root');
  users.admin = await signUp('Admin');
  psql(dbUrl(DB), `UPDATE users SET role = 'ADMIN' WHERE id IN (${users.root.id}, ${users.admin.id})`);
});

after(async () => {
  await a?.stop();
  await b?.stop();
  psql(ADMIN_URL, `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
});

const wsUrl = (folio) => `${folio.url.replace('http', 'ws')}/graphql`;

function wsClient(folio, tok) {
  return createWsClient({
    url: wsUrl(folio),
    webSocketImpl: WebSocket,
    connectionParams: tok ? { Authorization: `Bearer ${tok}` } : {},
    retryAttempts: 0,
    lazy: true,
  });
}

function sseClient(folio, tok) {
  return createSseClient({
    url: `${folio.url}/graphql`,
    headers: tok ? { Authorization: `Bearer ${tok}` } : {},
    retryAttempts: 0,
  });
}

/** Reads an async iterator's next value within `ms`, or fails. */
async function next(iterator, ms = 10_000) {
  let timer;
  const timeout = new Promise((_, fail) => {
    timer = setTimeout(() => fail(new Error(`no result within ${ms} ms`)), ms);
  });
  try {
    const item = await Promise.race([iterator.next(), timeout]);
    return item;
  } finally {
    clearTimeout(timer);
  }
}

/** Nothing more arrives within `ms`. Returns the read still waiting (wrapped: a bare promise would be awaited). */
async function quiet(iterator, ms = 500) {
  const pending = iterator.next();
  const result = await Promise.race([pending, sleep(ms).then(() => 'quiet')]);
  assert.equal(result, 'quiet', `expected nothing, got ${JSON.stringify(result)}`);
  return { pending };
}

async function createPost(folio, who, title, published) {
  const data = await folio.must(
    'mutation C($i: CreatePostInput!) { createPost(input: $i) { id } }',
    { i: { title, content: 'Content long enough to be a post.', published } },
    who.token,
  );
  return data.createPost.id;
}

/** Subscribes and gives the subscription time to be registered before the first write. */
async function subscribe(client, payload) {
  const iterator = client.iterate(payload);
  // graphql-ws and graphql-sse send the subscribe lazily, on the first read.
  const first = iterator.next();
  await sleep(300);
  return { iterator, first };
}

test('postPublished on B announces posts published on A, never drafts', async () => {
  const client = wsClient(b);
  const { iterator, first } = await subscribe(client, { query: 'subscription { postPublished { id title } }' });
  await createPost(a, users.alice, 'A draft nobody hears of', false);
  const id = await createPost(a, users.alice, 'Published across instances', true);
  const got = await Promise.race([first, sleep(10_000).then(() => ({ timeout: true }))]);
  assert.deepEqual(got.value, { data: { postPublished: { id, title: 'Published across instances' } } });
  await iterator.return();
  await client.dispose();
});

test('commentAdded over SSE on A hears comments added on B; a draft is NOT_FOUND', async () => {
  const post = await createPost(a, users.alice, 'Comment target post', true);
  const draft = await createPost(a, users.alice, 'Secret draft post', false);
  const client = sseClient(a, users.bob.token);
  // A draft the subscriber may not see: refused with the same code as the post mutations.
  const refused = client.iterate({ query: `subscription { commentAdded(postId: "${draft}") { id } }` });
  const answer = await next(refused);
  assert.equal(answer.value.errors[0].extensions.code, 'NOT_FOUND');
  assert.equal((await next(refused)).done, true);

  const { iterator, first } = await subscribe(client, {
    query: 'subscription C($p: ID!) { commentAdded(postId: $p) { body author { name } } }',
    variables: { p: post },
  });
  await b.must(
    'mutation A($p: ID!) { addComment(input: {postId: $p, body: "Hello from B"}) { id } }',
    { p: post },
    users.bob.token,
  );
  const got = await Promise.race([first, sleep(10_000).then(() => ({ timeout: true }))]);
  assert.deepEqual(got.value, { data: { commentAdded: { body: 'Hello from B', author: { name: 'Bob' } } } });
  await iterator.return();
  client.dispose();
});

test('postUpdated follows changes made on the other instance, then null and complete', async () => {
  const post = await createPost(a, users.alice, 'Post to be updated', true);
  const client = wsClient(b);
  const { iterator, first } = await subscribe(client, {
    query: 'subscription U($id: ID!) { postUpdated(id: $id) { title } }',
    variables: { id: post },
  });
  await a.must(
    'mutation U($id: ID!) { updatePost(id: $id, input: {title: "Updated title"}) { id } }',
    { id: post },
    users.alice.token,
  );
  // The bus is asynchronous: the creation's own change, published on A before it answered, can reach B after
  // the subscription started there (seen on a Redis Cluster, whose nodes forward messages). It announces the
  // post as it was then; the update's change comes next, and must show the new title.
  let got = (await first).value;
  if (got?.data?.postUpdated?.title === 'Post to be updated') got = (await next(iterator)).value;
  assert.deepEqual(got, { data: { postUpdated: { title: 'Updated title' } } });
  await a.must('mutation U($id: ID!) { unpublishPost(id: $id) { id } }', { id: post }, users.alice.token);
  assert.deepEqual((await next(iterator)).value, { data: { postUpdated: null } });
  assert.equal((await next(iterator)).done, true);
  await client.dispose();
});

test('a live query on B re-runs after a mutation on A, and sends nothing when the result did not change', async () => {
  const post = await createPost(a, users.alice, 'Live query target', true);
  for (const [name, client] of [['ws', wsClient(b)], ['sse', sseClient(b)]]) {
    const iterator = client.iterate({
      query: 'query L($id: ID!) @live { post(id: $id) { title commentCount } }',
      variables: { id: post },
    });
    const initial = (await next(iterator)).value;
    assert.equal(initial.data.post.commentCount, name === 'ws' ? 0 : 1, name);
    // Same title again: the post's tag is purged, the result is the same, nothing is sent.
    await a.must(
      'mutation U($id: ID!, $t: String!) { updatePost(id: $id, input: {title: $t}) { id } }',
      { id: post, t: 'Live query target' },
      users.alice.token,
    );
    const { pending } = await quiet(iterator);
    await a.must(
      'mutation A($p: ID!) { addComment(input: {postId: $p, body: "counted"}) { id } }',
      { p: post },
      users.bob.token,
    );
    const changed = await Promise.race([pending, sleep(10_000).then(() => ({ timeout: true }))]);
    assert.equal(changed.value.data.post.commentCount, initial.data.post.commentCount + 1, name);
    await iterator.return();
    if (client.dispose) await client.dispose();
  }
});

test('authorization is re-checked at each re-execution: a demoted admin stops seeing admin data', async () => {
  const client = wsClient(b, token(users.admin.id));
  const iterator = client.iterate({ query: 'query @live { users(first: 1) { totalCount } }' });
  const first = (await next(iterator)).value;
  assert.ok(first.data.users.totalCount >= 4, JSON.stringify(first));
  await a.must(
    'mutation D($id: ID!) { setUserRole(userId: $id, role: USER) { id } }',
    { id: users.admin.id },
    token(users.root.id),
  );
  const after = (await next(iterator)).value;
  assert.equal(after.errors[0].extensions.code, 'FORBIDDEN', JSON.stringify(after));
  await iterator.return();
  await client.dispose();
});

/** A raw graphql-transport-ws socket, to see close codes. */
function raw(folio) {
  const socket = new WebSocket(wsUrl(folio), 'graphql-transport-ws');
  const messages = [];
  const closed = new Promise((ok) => socket.on('close', (code, reason) => ok({ code, reason: reason.toString() })));
  socket.on('message', (m) => messages.push(JSON.parse(m.toString())));
  const open = new Promise((ok, fail) => {
    socket.on('open', ok);
    socket.on('error', fail);
  });
  const send = (m) => socket.send(typeof m === 'string' ? m : JSON.stringify(m));
  const acked = async () => {
    for (let i = 0; i < 100; i++) {
      if (messages.some((m) => m.type === 'connection_ack')) return;
      await sleep(20);
    }
    throw new Error('no connection_ack');
  };
  return { socket, messages, closed, open, send, acked };
}

test('every close code of the protocol', async () => {
  const cases = [
    ['no connection_init in time', 4408, async () => {}],
    ['a bad token', 4403, async (c) => c.send({ type: 'connection_init', payload: { Authorization: 'Bearer forged' } })],
    ['a second connection_init', 4429, async (c) => {
      c.send({ type: 'connection_init' });
      await c.acked();
      c.send({ type: 'connection_init' });
    }],
    ['subscribe before the ack', 4401, async (c) => c.send({ id: '1', type: 'subscribe', payload: { query: '{ me { id } }' } })],
    ['a malformed message', 4400, async (c) => {
      c.send({ type: 'connection_init' });
      await c.acked();
      c.send('{"type": "subscribe"');
    }],
    ['a duplicate subscription id', 4409, async (c) => {
      c.send({ type: 'connection_init' });
      await c.acked();
      const sub = { id: 'dup', type: 'subscribe', payload: { query: 'subscription { postPublished { id } }' } };
      c.send(sub);
      c.send(sub);
    }],
  ];
  for (const [what, code, act] of cases) {
    const c = raw(b);
    await c.open;
    await act(c);
    const closed = await c.closed;
    assert.equal(closed.code, code, `${what}: ${JSON.stringify(closed)}`);
  }
});

test('an expiring token closes the connection with 4403', async () => {
  const client = wsClient(b, token(users.bob.id, 2));
  const closed = new Promise((ok) => client.on('closed', (event) => ok(event)));
  const iterator = client.iterate({ query: 'subscription { postPublished { id } }' });
  const pending = iterator.next().catch((err) => err);
  const event = await closed;
  assert.equal(event.code, 4403);
  await pending;
  await client.dispose();
});

/** Resident memory of a process, in bytes. */
const rss = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;

async function metric(folio, name) {
  const line = (await folio.text('/metrics')).split('\n').find((l) => l.startsWith(`${name} `));
  return Number(line?.split(' ')[1] ?? 'NaN');
}

test('a slow consumer is disconnected, and the server does not buffer for it', async () => {
  const post = await createPost(a, users.alice, 'Big live post', true);
  const c = raw(b);
  await c.open;
  c.send({ type: 'connection_init' });
  await c.acked();
  c.send({
    id: 'big',
    type: 'subscribe',
    payload: { query: 'query L($id: ID!) @live { post(id: $id) { content } }', variables: { id: post } },
  });
  await sleep(300);
  // Stop reading: the socket's buffers fill, then Folio's queue of FOLIO_LIVE_QUEUE messages.
  c.socket._socket.pause();
  const before = rss(b.child.pid);
  const dropped = await metric(b, 'folio_live_slow_consumers_total');
  let disconnected = false;
  for (let i = 0; i < 400 && !disconnected; i++) {
    await a.must(
      'mutation U($id: ID!, $c: String!) { updatePost(id: $id, input: {content: $c}) { id } }',
      { id: post, c: `${i} ${'z'.repeat(45_000)}` },
      users.alice.token,
    );
    if (i % 10 === 9) disconnected = (await metric(b, 'folio_live_slow_consumers_total')) > dropped;
  }
  assert.ok(disconnected, 'the slow consumer was dropped');
  const grown = rss(b.child.pid) - before;
  assert.ok(grown < 64 * 1024 * 1024, `resident memory grew by ${grown} bytes`);
  c.socket._socket.resume();
  const closed = await c.closed;
  assert.equal(closed.code, 4500, JSON.stringify(closed));
});
