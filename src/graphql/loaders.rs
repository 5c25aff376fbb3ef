//! Per-request batched loading. One `DataLoader` per request wraps `Batch`, which implements `Loader` once per
//! key type; each impl is one store batch function, so a relation costs one statement per level of the query,
//! however many parents it is loaded for.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::{DataLoader, Loader};

use crate::error::AppError;
use crate::store::{CommentRow, Page, PostRow, Store, UserRow};

/// A batch failed; shared by every key of the batch, hence the `Arc`.
pub type LoadError = Arc<AppError>;

/// Key: a user by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserId(pub i64);
/// Key: a post by id (drafts included; visibility is decided by the resolver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PostId(pub i64);
/// Key: a comment by id.
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

/// The loader of every relation, over the shared store.
pub struct Batch {
    store: Store,
}

/// The request's loaders.
pub type Loaders = DataLoader<Batch>;

/// A fresh loader set for one request. `delay` is how long the first key waits for its siblings.
pub fn for_request(store: Store, delay: Duration) -> Loaders {
    DataLoader::new(Batch { store }, tokio::spawn).delay(delay)
}

fn ids<K: Copy>(keys: &[K], f: impl Fn(K) -> i64) -> Vec<i64> {
    keys.iter().map(|k| f(*k)).collect()
}

/// Groups keyed pages by their shared parameters, so one statement serves every parent asking for the same
/// page shape (the common case: all of them).
fn by_shape<K: Copy, S: Eq + std::hash::Hash>(keys: &[K], shape: impl Fn(K) -> S) -> HashMap<S, Vec<K>> {
    let mut groups: HashMap<S, Vec<K>> = HashMap::new();
    for k in keys {
        groups.entry(shape(*k)).or_default().push(*k);
    }
    groups
}

impl Loader<UserId> for Batch {
    type Value = UserRow;
    type Error = LoadError;
    async fn load(&self, keys: &[UserId]) -> Result<HashMap<UserId, UserRow>, LoadError> {
        let rows = self.store.users_by_ids(&ids(keys, |k| k.0)).await?;
        Ok(rows.into_iter().map(|r| (UserId(r.id), r)).collect())
    }
}

impl Loader<PostId> for Batch {
    type Value = PostRow;
    type Error = LoadError;
    async fn load(&self, keys: &[PostId]) -> Result<HashMap<PostId, PostRow>, LoadError> {
        let rows = self.store.posts_by_ids(&ids(keys, |k| k.0)).await?;
        Ok(rows.into_iter().map(|r| (PostId(r.id), r)).collect())
    }
}

impl Loader<CommentId> for Batch {
    type Value = CommentRow;
    type Error = LoadError;
    async fn load(&self, keys: &[CommentId]) -> Result<HashMap<CommentId, CommentRow>, LoadError> {
        let rows = self.store.comments_by_ids(&ids(keys, |k| k.0)).await?;
        Ok(rows.into_iter().map(|r| (CommentId(r.id), r)).collect())
    }
}

impl Loader<CommentCount> for Batch {
    type Value = i64;
    type Error = LoadError;
    async fn load(&self, keys: &[CommentCount]) -> Result<HashMap<CommentCount, i64>, LoadError> {
        let counts = self.store.comment_counts(&ids(keys, |k| k.0)).await?;
        let found: HashMap<i64, i64> = counts.into_iter().collect();
        // Posts without comments are absent from the result: they count zero.
        Ok(keys.iter().map(|k| (*k, found.get(&k.0).copied().unwrap_or(0))).collect())
    }
}

impl Loader<PostComments> for Batch {
    type Value = Vec<CommentRow>;
    type Error = LoadError;
    async fn load(&self, keys: &[PostComments]) -> Result<HashMap<PostComments, Vec<CommentRow>>, LoadError> {
        let mut out: HashMap<PostComments, Vec<CommentRow>> = keys.iter().map(|k| (*k, Vec::new())).collect();
        for (page, group) in by_shape(keys, |k| k.page) {
            let rows = self.store.comments_by_posts(&ids(&group, |k| k.post_id), page).await?;
            for row in rows {
                if let Some(list) = out.get_mut(&PostComments { post_id: row.post_id, page }) {
                    list.push(row);
                }
            }
        }
        Ok(out)
    }
}

impl Loader<AuthorPosts> for Batch {
    type Value = Vec<PostRow>;
    type Error = LoadError;
    async fn load(&self, keys: &[AuthorPosts]) -> Result<HashMap<AuthorPosts, Vec<PostRow>>, LoadError> {
        let mut out: HashMap<AuthorPosts, Vec<PostRow>> = keys.iter().map(|k| (*k, Vec::new())).collect();
        for ((include_drafts, page), group) in by_shape(keys, |k| (k.include_drafts, k.page)) {
            let rows = self.store.posts_by_authors(&ids(&group, |k| k.author_id), include_drafts, page).await?;
            for row in rows {
                let key = AuthorPosts { author_id: row.author_id, include_drafts, page };
                if let Some(list) = out.get_mut(&key) {
                    list.push(row);
                }
            }
        }
        Ok(out)
    }
}

impl Loader<AuthorPostCount> for Batch {
    type Value = i64;
    type Error = LoadError;
    async fn load(&self, keys: &[AuthorPostCount]) -> Result<HashMap<AuthorPostCount, i64>, LoadError> {
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
