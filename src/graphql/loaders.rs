//! The request's loaders: one `Batcher` per relation, each backed by one store batch function, so a relation
//! costs one statement per level of the query however many parents it is loaded for (see `batch.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::AppError;
use crate::graphql::batch::{BatchFn, Batcher, Dispatcher};
use crate::store::{CommentOnPost, CommentRow, Content, Page, PostRow, Store, UserRow};

/// Key: a user by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserId(pub i64);
/// Key: a post by id (drafts included; visibility is decided by the resolver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PostId(pub i64);
/// Key: a comment by id, with its post's state (a comment is only as visible as its post).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommentId(pub i64);
/// Key: how many comments a post has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommentCount(pub i64);
/// Key: one page of a post's comments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PostComments {
    pub post_id: i64,
    pub page: Page,
}
/// Key: one page of an author's posts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AuthorPosts {
    pub author_id: i64,
    pub include_drafts: bool,
    pub page: Page,
}
/// Key: how many posts an author has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AuthorPostCount {
    pub author_id: i64,
    pub include_drafts: bool,
}

/// Every relation's batch function, over the shared store.
pub struct Sources {
    store: Store,
}

/// One request's loaders.
pub struct Loaders {
    sources: Arc<Sources>,
    users: Batcher<UserId, UserRow>,
    posts: Batcher<PostId, PostRow>,
    comments: Batcher<CommentId, CommentOnPost>,
    comment_counts: Batcher<CommentCount, i64>,
    post_comments: Batcher<PostComments, Vec<CommentRow>>,
    author_posts: Batcher<AuthorPosts, Vec<PostRow>>,
    author_post_counts: Batcher<AuthorPostCount, i64>,
}

impl Loaders {
    /// Fresh loaders for one request, and the dispatcher that must drive its execution (`batch::Batched`).
    pub fn new(store: Store) -> (Self, Arc<Dispatcher>) {
        let d = Arc::new(Dispatcher::default());
        let loaders = Self {
            sources: Arc::new(Sources { store }),
            users: Batcher::new(&d),
            posts: Batcher::new(&d),
            comments: Batcher::new(&d),
            comment_counts: Batcher::new(&d),
            post_comments: Batcher::new(&d),
            author_posts: Batcher::new(&d),
            author_post_counts: Batcher::new(&d),
        };
        (loaders, d)
    }

    /// Loads one value, batched with every sibling resolver's request for the same relation.
    pub async fn load_one<K>(
        &self,
        key: K,
    ) -> Result<Option<<Sources as BatchFn<K>>::Value>, AppError>
    where
        Self: HasBatcher<K>,
        Sources: BatchFn<K>,
        K: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
    {
        self.batcher().load_one(&self.sources, key).await
    }

    /// Records what a parent's statement already fetched for `key` (see `prefetch.rs`).
    pub fn prime<K>(&self, key: K, value: <Sources as BatchFn<K>>::Value)
    where
        Self: HasBatcher<K>,
        Sources: BatchFn<K>,
        K: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
    {
        self.batcher().prime(key, value);
    }
}

/// Which batcher serves key type `K`.
pub trait HasBatcher<K>
where
    Sources: BatchFn<K>,
{
    fn batcher(&self) -> &Batcher<K, <Sources as BatchFn<K>>::Value>;
}

macro_rules! has_batcher {
    ($($key:ty => $field:ident),* $(,)?) => {$(
        impl HasBatcher<$key> for Loaders {
            fn batcher(&self) -> &Batcher<$key, <Sources as BatchFn<$key>>::Value> {
                &self.$field
            }
        }
    )*};
}

has_batcher! {
    UserId => users,
    PostId => posts,
    CommentId => comments,
    CommentCount => comment_counts,
    PostComments => post_comments,
    AuthorPosts => author_posts,
    AuthorPostCount => author_post_counts,
}

fn ids<K: Copy>(keys: &[K], f: impl Fn(K) -> i64) -> Vec<i64> {
    keys.iter().map(|k| f(*k)).collect()
}

/// Groups keyed pages by their shared parameters, so one statement serves every parent asking for the same
/// page shape (the common case: all of them).
fn by_shape<K: Copy, S: Eq + std::hash::Hash>(
    keys: &[K],
    shape: impl Fn(K) -> S,
) -> HashMap<S, Vec<K>> {
    let mut groups: HashMap<S, Vec<K>> = HashMap::new();
    for k in keys {
        groups.entry(shape(*k)).or_default().push(*k);
    }
    groups
}

impl BatchFn<UserId> for Sources {
    type Value = UserRow;
    async fn load(&self, keys: &[UserId]) -> Result<HashMap<UserId, UserRow>, AppError> {
        let rows = self.store.users_by_ids(&ids(keys, |k| k.0)).await?;
        Ok(rows.into_iter().map(|r| (UserId(r.id), r)).collect())
    }
}

impl BatchFn<PostId> for Sources {
    type Value = PostRow;
    async fn load(&self, keys: &[PostId]) -> Result<HashMap<PostId, PostRow>, AppError> {
        let rows = self.store.posts_by_ids(&ids(keys, |k| k.0)).await?;
        Ok(rows.into_iter().map(|r| (PostId(r.id), r)).collect())
    }
}

impl BatchFn<CommentId> for Sources {
    type Value = CommentOnPost;
    async fn load(
        &self,
        keys: &[CommentId],
    ) -> Result<HashMap<CommentId, CommentOnPost>, AppError> {
        let rows = self
            .store
            .comments_on_posts_by_ids(&ids(keys, |k| k.0))
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (CommentId(r.comment.id), r))
            .collect())
    }
}

impl BatchFn<CommentCount> for Sources {
    type Value = i64;
    async fn load(&self, keys: &[CommentCount]) -> Result<HashMap<CommentCount, i64>, AppError> {
        let found: HashMap<i64, i64> = self
            .store
            .comment_counts(&ids(keys, |k| k.0))
            .await?
            .into_iter()
            .collect();
        // Posts without comments are absent from the result: they count zero.
        Ok(keys
            .iter()
            .map(|k| (*k, found.get(&k.0).copied().unwrap_or(0)))
            .collect())
    }
}

impl BatchFn<PostComments> for Sources {
    type Value = Vec<CommentRow>;
    async fn load(
        &self,
        keys: &[PostComments],
    ) -> Result<HashMap<PostComments, Vec<CommentRow>>, AppError> {
        let mut out: HashMap<PostComments, Vec<CommentRow>> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        for (page, group) in by_shape(keys, |k| k.page) {
            for row in self
                .store
                .comments_by_posts(&ids(&group, |k| k.post_id), page)
                .await?
            {
                if let Some(list) = out.get_mut(&PostComments {
                    post_id: row.post_id,
                    page,
                }) {
                    list.push(row);
                }
            }
        }
        Ok(out)
    }
}

impl BatchFn<AuthorPosts> for Sources {
    type Value = Vec<PostRow>;
    async fn load(
        &self,
        keys: &[AuthorPosts],
    ) -> Result<HashMap<AuthorPosts, Vec<PostRow>>, AppError> {
        let mut out: HashMap<AuthorPosts, Vec<PostRow>> =
            keys.iter().map(|k| (*k, Vec::new())).collect();
        for ((include_drafts, page), group) in by_shape(keys, |k| (k.include_drafts, k.page)) {
            for row in self
                .store
                .posts_by_authors(
                    &ids(&group, |k| k.author_id),
                    include_drafts,
                    page,
                    Content::Read,
                )
                .await?
            {
                let key = AuthorPosts {
                    author_id: row.author_id,
                    include_drafts,
                    page,
                };
                if let Some(list) = out.get_mut(&key) {
                    list.push(row);
                }
            }
        }
        Ok(out)
    }
}

impl BatchFn<AuthorPostCount> for Sources {
    type Value = i64;
    async fn load(
        &self,
        keys: &[AuthorPostCount],
    ) -> Result<HashMap<AuthorPostCount, i64>, AppError> {
        let mut out = HashMap::new();
        for (include_drafts, group) in by_shape(keys, |k| k.include_drafts) {
            let found: HashMap<i64, i64> = self
                .store
                .post_counts_by_authors(&ids(&group, |k| k.author_id), include_drafts)
                .await?
                .into_iter()
                .collect();
            for k in group {
                out.insert(k, found.get(&k.author_id).copied().unwrap_or(0));
            }
        }
        Ok(out)
    }
}
