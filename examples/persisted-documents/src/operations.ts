// The operations this "frontend" ships. graphql-codegen reads them from here and types them.
import { graphql } from './gql/index.js';

export const FeedQuery = graphql(`
  query Feed($first: Int!) {
    posts(first: $first) {
      totalCount
      nodes {
        ...PostCard
      }
    }
  }
`);

export const PostCardFragment = graphql(`
  fragment PostCard on Post {
    id
    title
    author {
      name
    }
  }
`);

export const MeQuery = graphql(`
  query Me {
    me {
      id
      name
    }
  }
`);
