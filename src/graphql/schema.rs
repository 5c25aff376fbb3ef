//! Builds the schema: merged query roots, limits, and the SDL that `schema.graphql` mirrors.

use async_graphql::{EmptyMutation, EmptySubscription, MergedObject, Schema};

use crate::graphql::posts::PostQuery;
use crate::graphql::users::UserQuery;
use crate::store::Store;

/// Every query field, merged from the domain folders.
#[derive(MergedObject, Default)]
pub struct QueryRoot(UserQuery, PostQuery);

pub type FolioSchema = Schema<QueryRoot, EmptyMutation, EmptySubscription>;

/// Static limits applied to every operation before it runs.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
}

/// The schema, with the store as schema-wide data. `store` is `None` only for printing the SDL.
pub fn build_schema(store: Option<Store>, limits: Limits) -> FolioSchema {
    let mut builder = Schema::build(QueryRoot::default(), EmptyMutation, EmptySubscription)
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity);
    if let Some(store) = store {
        builder = builder.data(store);
    }
    builder.finish()
}

/// The schema definition as `folio schema` prints it and `schema.graphql` holds it.
pub fn sdl() -> String {
    let limits = Limits {
        max_depth: usize::MAX,
        max_complexity: usize::MAX,
    };
    build_schema(None, limits).sdl()
}
