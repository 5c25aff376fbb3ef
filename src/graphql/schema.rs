//! Builds the schema: merged query and mutation roots, limits, and the SDL that `schema.graphql` mirrors.

use std::sync::Arc;

use async_graphql::{EmptySubscription, MergedObject, Schema};

use crate::auth::Authenticator;
use crate::cache::Cache;
use crate::graphql::cache::CacheMutation;
use crate::graphql::comments::CommentMutation;
use crate::graphql::posts::{PostMutation, PostQuery};
use crate::graphql::users::{UserMutation, UserQuery};
use crate::ratelimit::{Rate, RateLimiter};
use crate::store::Store;

/// Every query field, merged from the domain folders. Named `Query`, as clients and federation gateways expect.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(UserQuery, PostQuery);

/// Every mutation, merged from the domain folders.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(UserMutation, PostMutation, CommentMutation, CacheMutation);

pub type FolioSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// What resolvers reach through the schema: the store, the token issuer and the cache. Absent only for printing
/// the SDL.
pub struct SchemaData {
    pub store: Store,
    pub auth: Arc<Authenticator>,
    pub cache: Arc<Cache>,
    pub login_limits: LoginLimits,
}

/// How often `login` may be tried: per email (against guessing one account's password) and per client address
/// (against trying many accounts).
#[derive(Clone)]
pub struct LoginLimits {
    pub limiter: Arc<RateLimiter>,
    pub per_email: Rate,
    pub per_address: Rate,
}

/// Static limits applied to every operation before it runs.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_directives: usize,
    /// Serve `__schema` / `__type` (off in production unless `FOLIO_INTROSPECTION=true`).
    pub introspection: bool,
    /// "Did you mean ...?" in validation errors, which would leak field names when introspection is off.
    pub suggestions: bool,
}

/// The schema, with the store and authenticator as schema-wide data.
pub fn build_schema(data: Option<SchemaData>, limits: Limits) -> FolioSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        EmptySubscription,
    )
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity)
    .limit_directives(limits.max_directives);
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    if !limits.suggestions {
        builder = builder.disable_suggestions();
    }
    if let Some(data) = data {
        builder = builder
            .data(data.store)
            .data(data.auth)
            .data(data.cache)
            .data(data.login_limits);
    }
    builder.finish()
}

/// The schema definition as `folio schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    let limits = Limits {
        max_depth: usize::MAX,
        max_complexity: usize::MAX,
        max_directives: usize::MAX,
        introspection: true,
        suggestions: true,
    };
    build_schema(None, limits).sdl()
}
