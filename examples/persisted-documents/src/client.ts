// A minimal typed client: sends a generated document by its id only (`documentId`), as a client of a
// safelisted Folio does, and returns data typed by the document.
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';

import { useFragment } from './gql/index.js';
import { FeedQuery, MeQuery, PostCardFragment } from './operations.js';

type Persisted = { __meta__?: { hash?: string } };

export async function execute<Result, Variables>(
  url: string,
  document: TypedDocumentNode<Result, Variables> & Persisted,
  variables: Variables,
): Promise<Result> {
  const documentId = document.__meta__?.hash;
  if (!documentId) throw new Error('the document has no persisted hash: run the codegen with persistedDocuments');
  const res = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify({ documentId, variables }),
  });
  const body = (await res.json()) as { data?: Result; errors?: { message: string }[] };
  if (body.errors?.length || !body.data) throw new Error(`Folio answered errors: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/** What the example's test runs: the feed's titles and the viewer, typed all the way. */
export async function run(url: string): Promise<{ total: number; titles: string[]; me: string | null }> {
  const feed = await execute(url, FeedQuery, { first: 5 });
  const me = await execute(url, MeQuery, {});
  // `nodes` holds masked fragment references: the fragment's fields are read through its own type.
  const titles = feed.posts.nodes.map((node) => useFragment(PostCardFragment, node).title);
  return { total: feed.posts.totalCount, titles, me: me.me?.name ?? null };
}
