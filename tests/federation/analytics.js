// `analytics`: a second subgraph, written the usual way with @apollo/subgraph. It owns view and follower counts
// and a ranking of posts, and knows Folio's entities only by their keys: it adds `Post.viewCount` and
// `User.followerCount`, and its `topPosts` returns references that the gateway asks Folio to complete.

import { ApolloServer } from '@apollo/server';
import { ApolloServerPluginInlineTraceDisabled } from '@apollo/server/plugin/disabled';
import { startStandaloneServer } from '@apollo/server/standalone';
import { buildSubgraphSchema } from '@apollo/subgraph';
import { parse } from 'graphql';

export const ANALYTICS_SDL = `
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])

type Post @key(fields: "id") {
  id: ID!
  "How often the post was read."
  viewCount: Int!
}

type User @key(fields: "id") {
  id: ID!
  "How many readers follow this user."
  followerCount: Int!
}

type Query {
  "The most read posts, most read first. A post the caller may not see (a draft that was unpublished after it was read) is null in its place."
  topPosts(limit: Int!): [Post]!
}
`;

/** Deterministic counts, so the test can predict them. */
export const viewCount = (id) => (Number(id) * 37) % 1000 + 1;
export const followerCount = (id) => Number(id) * 10 + 7;

/**
 * Starts the subgraph on a free port. `ranking` is the list of post ids `topPosts` answers from. Returns
 * `{ url, sdl, stop }`.
 */
export async function startAnalytics(ranking) {
  const resolvers = {
    Query: {
      topPosts: (_, { limit }) => ranking.slice(0, limit).map((id) => ({ __typename: 'Post', id: String(id) })),
    },
    Post: {
      __resolveReference: (ref) => ({ id: ref.id }),
      viewCount: (post) => viewCount(post.id),
    },
    User: {
      __resolveReference: (ref) => ({ id: ref.id }),
      followerCount: (user) => followerCount(user.id),
    },
  };
  const server = new ApolloServer({
    schema: buildSubgraphSchema([{ typeDefs: parse(ANALYTICS_SDL), resolvers }]),
    // No usage reporting here, so no traces to inline (and no notice about them).
    plugins: [ApolloServerPluginInlineTraceDisabled()],
  });
  const { url } = await startStandaloneServer(server, { listen: { host: '127.0.0.1', port: 0 } });
  return { url, sdl: ANALYTICS_SDL, stop: () => server.stop() };
}
