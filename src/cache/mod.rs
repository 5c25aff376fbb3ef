//! The response cache: whole GraphQL query responses, stored by key and purged by tag.
//!
//! - **Key**: hash of the normalised document, operation name, variables and scope (`key.rs`). A hit is served
//!   before parsing. Lookups try the public entry, then the caller's own (`Scope::Anonymous` or `Scope::User`).
//! - **Scope**: resolvers mark a response as viewer-dependent whenever their output could differ for another
//!   caller (`User.email`, `me`, drafts, guards: see `ContextExt::viewer`). Such a response is stored only under
//!   its caller's scope, so it is never served to anyone else, anonymous callers included.
//! - **Tags**: resolvers record what they read (`Post:7`, `Post:list`, `User:3:posts`, ...). Mutations and
//!   webhooks purge the tags they affect after their transaction commits, before they answer.
//! - **Freshness under races**: every purge takes a new sequence number and records it on each of its tags. An
//!   execution notes the sequence number when it *starts* (`begin`). Its entry keeps that start and its tags,
//!   and a lookup turns it away if one of them was purged after it (both backends: nothing indexes entries by
//!   tag, so a store costs the same whatever the tags). A slow query that began before a mutation is never
//!   served after it.
//! - **Announced**: every purge is also a `live::Change` published on the bus (`commit`), so live queries and
//!   subscriptions on every instance learn of it; the cache is the one place writes report what they changed.
//! - **Backends**: in-process (`memory.rs`, moka, bounded by bytes) or Redis (`redis.rs`, shared by all
//!   instances). Redis trouble never fails a request: it is answered from the database (`BYPASS`) and counted.

pub mod flight;
pub mod key;
mod memory;
mod purges;
mod redis;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::IntCounter;

pub use key::{DocumentHash, Key, KeyBase, Keys, Scope, push_hex};
// Declared with the other settings; re-exported where they are used.
pub use crate::config::{CacheConfig, CacheMode};

use crate::error::AppError;
use crate::live::{Bus, Change, Event};
use crate::redis_conn::RedisConn;
use crate::replicas::Replicas;

/// The tags one execution read, sorted and distinct: shared by the stored entry and the outcome rather than
/// copied (a post page reads two dozen).
pub type Tags = std::sync::Arc<[Tag]>;

/// The longest any entry lives, whatever its hints say.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// One cached response.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The serialised GraphQL response.
    pub body: bytes::Bytes,
    /// Strong validator of `body`, quoted (`"..."`).
    pub etag: String,
    /// Lifetime in seconds, from the response's cache hints.
    pub max_age: u32,
    /// `Cache-Control: public` (true) or `private`.
    pub public: bool,
    /// When it was computed (Unix seconds), for `Age`.
    pub stored_at: u64,
}

impl Entry {
    /// Seconds since the entry was computed.
    pub fn age(&self) -> u64 {
        unix_now().saturating_sub(self.stored_at)
    }

    /// A compact binary form for Redis: version, flags, lifetimes, etag, body.
    #[cfg(test)]
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        // Writing to a `Vec` cannot fail.
        let _ = self.write_to(&mut out);
        out
    }

    /// The length of `encode`'s output.
    fn encoded_len(&self) -> usize {
        16 + self.etag.len() + self.body.len()
    }

    /// `encode`, written to `out`: Redis's stored value wraps it, written straight into the command, so the
    /// body is copied once. The etag is a quoted hash, far below the `u16` its length is written in.
    fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let etag = self.etag.as_bytes();
        let mut head = [0u8; 16];
        head[0] = 1;
        head[1] = u8::from(self.public);
        head[2..6].copy_from_slice(&self.max_age.to_be_bytes());
        head[6..14].copy_from_slice(&self.stored_at.to_be_bytes());
        head[14..16].copy_from_slice(&(etag.len() as u16).to_be_bytes());
        out.write_all(&head)?;
        out.write_all(etag)?;
        out.write_all(&self.body)
    }

    /// The entry in `raw`; its body shares `raw`'s bytes (a feed page is 4-8 KiB, copied on every hit before).
    fn decode(raw: &bytes::Bytes) -> Option<Self> {
        let (&version, rest) = raw.split_first()?;
        if version != 1 || rest.len() < 15 {
            return None;
        }
        let public = rest[0] == 1;
        let max_age = u32::from_be_bytes(rest[1..5].try_into().ok()?);
        let stored_at = u64::from_be_bytes(rest[5..13].try_into().ok()?);
        let etag_len = u16::from_be_bytes(rest[13..15].try_into().ok()?) as usize;
        let etag = std::str::from_utf8(rest.get(15..15 + etag_len)?).ok()?;
        let body = rest.get(15 + etag_len..)?;
        Some(Self {
            body: raw.slice_ref(body),
            etag: etag.to_owned(),
            max_age,
            public,
            stored_at,
        })
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A point in purge order: where an execution started (storing its result is refused if a tag it read was
/// purged since), or up to when a stored result was checked fresh.
#[derive(Clone, Debug)]
pub struct Snapshot {
    seq: u64,
    /// Redis only: the identity of the Redis data set, so a Redis that restarted (and forgot its purges) in
    /// between is noticed. Shared: every request a lookup call answers holds the same one.
    epoch: Option<std::sync::Arc<str>>,
}

impl Snapshot {
    /// Whether a result fresh as of `self` is fresh enough for a request that arrived at `arrival`: no purge
    /// can have happened between the two without being accounted for.
    pub fn covers(&self, arrival: &Snapshot) -> bool {
        self.epoch == arrival.epoch && self.seq >= arrival.seq
    }
}

/// The answer of a lookup.
pub enum Lookup {
    Hit(Entry),
    /// Not stored; with the snapshot `Cache::begin` would take now, when the lookup could take it on the way.
    Miss(Option<Snapshot>),
    /// The cache cannot be asked (Redis unreachable, or purges still undelivered): answer from the database.
    Bypass,
}

/// What one query execution read and whether its answer depends on the caller. Request data.
///
/// Tags are pushed as they are read, repeats included (a comment author's `User:3` once per comment), and
/// sorted and deduplicated once at the end: a set hashed each of a page's dozens of tags on every miss. They are
/// kept as [`Tag`] values, not strings: a miss reads a tag per row, and formatting each was most of the
/// allocations a cached miss made beyond an uncached request's.
#[derive(Default)]
pub struct Tracker {
    viewer_dependent: AtomicBool,
    tags: Mutex<Vec<Tag>>,
}

impl Tracker {
    pub fn mark_viewer_dependent(&self) {
        self.viewer_dependent.store(true, Ordering::Relaxed);
    }

    pub fn viewer_dependent(&self) -> bool {
        self.viewer_dependent.load(Ordering::Relaxed)
    }

    pub fn tag(&self, tag: Tag) {
        self.tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tag);
    }

    /// The distinct tags recorded so far, by name (`take_tags` without taking them).
    pub fn tags(&self) -> Vec<String> {
        let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner()).clone();
        tags.sort_unstable();
        tags.dedup();
        tags.iter().map(Tag::name).collect()
    }

    /// The distinct tags recorded, sorted (in `Tag`'s order); the tracker is left empty.
    pub fn take_tags(&self) -> Vec<Tag> {
        let mut tags = std::mem::take(&mut *self.tags.lock().unwrap_or_else(|p| p.into_inner()));
        tags.sort_unstable();
        tags.dedup();
        tags
    }
}

/// What a mutation's committed writes changed (tags to purge, rows to announce), committed by the operation
/// pipeline before the outcome is returned. Request data.
#[derive(Default)]
pub struct Purges {
    change: Mutex<Change>,
}

impl Purges {
    pub fn add(&self, tags: impl IntoIterator<Item = String>) {
        self.change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tags
            .extend(tags);
    }

    pub fn announce(&self, event: Event) {
        self.change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .push(event);
    }

    pub fn take(&self) -> Change {
        let mut change =
            std::mem::take(&mut *self.change.lock().unwrap_or_else(|p| p.into_inner()));
        change.tags.sort();
        change.tags.dedup();
        change
    }
}

/// The cache's counters in `/metrics`.
#[derive(Clone)]
pub struct CacheMetrics {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub bypass: IntCounter,
    pub purged: IntCounter,
    pub errors: IntCounter,
    /// Redis lookups and stores are batched: hits and misses over this is how many requests a call served.
    pub lookup_calls: IntCounter,
    /// Executions started before their lookup answered (`operation::Pipeline::run_ahead`), and those of them
    /// dropped because the lookup found the answer: the work the second costs is what the first saves a wait.
    pub ahead: IntCounter,
    pub ahead_dropped: IntCounter,
}

enum Backend {
    Memory(memory::MemoryCache),
    Redis(std::sync::Arc<redis::RedisCache>),
}

/// The response cache of one instance.
pub struct Cache {
    backend: Option<Backend>,
    metrics: CacheMetrics,
    ttl: u32,
    /// Where purges are announced.
    bus: std::sync::Arc<Bus>,
    /// Read replicas, which learn from every commit how far they must have replayed to serve its tags.
    replicas: Option<std::sync::Arc<Replicas>>,
}

impl Cache {
    /// The cache `config` asks for; `redis` is the shared connection when `REDIS_URL` is set; purges are
    /// announced on `bus` and marked for `replicas`.
    pub fn new(
        config: &CacheConfig,
        redis: Option<std::sync::Arc<RedisConn>>,
        metrics: CacheMetrics,
        bus: std::sync::Arc<Bus>,
        replicas: Option<std::sync::Arc<Replicas>>,
    ) -> anyhow::Result<Self> {
        let backend = match config.mode {
            CacheMode::Off => None,
            CacheMode::Memory => Some(Backend::Memory(memory::MemoryCache::new(config.max_bytes))),
            CacheMode::Redis => {
                let redis = redis.ok_or_else(|| {
                    anyhow::anyhow!(
                        "FOLIO_CACHE=redis needs REDIS_URL or FOLIO_REDIS_CLUSTER_NODES"
                    )
                })?;
                Some(Backend::Redis(redis::RedisCache::new(
                    redis,
                    config,
                    metrics.errors.clone(),
                    metrics.lookup_calls.clone(),
                )))
            }
        };
        let ttl = u32::try_from(config.ttl.min(MAX_TTL).as_secs()).unwrap_or(60);
        Ok(Self {
            backend,
            metrics,
            ttl,
            bus,
            replicas,
        })
    }

    /// An entry's lifetime in seconds from its response's hints (async-graphql: 0 = no hint, -1 = never
    /// cache): the configured lifetime, or a shorter hint.
    pub fn lifetime(&self, hint: i32) -> u32 {
        match hint {
            0 => self.ttl,
            n if n < 0 => 0,
            n => u32::try_from(n).unwrap_or(self.ttl).min(self.ttl),
        }
    }

    pub fn enabled(&self) -> bool {
        self.backend.is_some()
    }

    /// Whether entries are kept in this process, so that a look costs no round trip.
    pub fn in_process(&self) -> bool {
        matches!(self.backend, Some(Backend::Memory(_)))
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    /// Looks for the public entry, then the caller's own. Counts hits (misses and bypasses are counted by the
    /// caller, once it knows the request is a query).
    #[tracing::instrument(level = "debug", name = "cache.lookup", skip_all, fields(cache.result = tracing::field::Empty))]
    pub async fn lookup(&self, keys: &Keys) -> Lookup {
        let found = self.peek(keys).await;
        if let Lookup::Hit(_) = &found {
            self.metrics.hits.inc();
        }
        tracing::Span::current().record(
            "cache.result",
            match &found {
                Lookup::Hit(_) => "hit",
                Lookup::Miss(_) => "miss",
                Lookup::Bypass => "bypass",
            },
        );
        found
    }

    /// `lookup` without counting: for a second look at the same request.
    pub async fn peek(&self, keys: &Keys) -> Lookup {
        let keys = [keys.public, keys.own];
        match &self.backend {
            None => Lookup::Bypass,
            Some(Backend::Memory(m)) => Lookup::from(m.get(&keys)),
            Some(Backend::Redis(r)) => r.get(&keys).await,
        }
    }

    /// Where an execution that starts before its lookup answers may be stored as having started: a point in
    /// purge order read recently (Redis only; an in-process lookup answers without a wait). `None`: wait for the
    /// lookup.
    pub fn recent(&self) -> Option<Snapshot> {
        match &self.backend {
            Some(Backend::Redis(r)) => r.recent(),
            _ => None,
        }
    }

    /// Notes where an execution starts; `None` when its result must not be stored (no cache, Redis down).
    pub async fn begin(&self) -> Option<Snapshot> {
        match &self.backend {
            None => None,
            Some(Backend::Memory(m)) => Some(m.begin()),
            Some(Backend::Redis(r)) => r.begin().await,
        }
    }

    /// Stores `entry` under `key` with `tags`, unless (in process) one of the tags was purged since `snapshot`.
    /// Returns the point in purge order as of which the entry is fresh, or `None` if it was refused.
    #[tracing::instrument(level = "debug", name = "cache.store", skip_all, fields(cache.tags = tags.len()))]
    pub async fn store(
        &self,
        key: Key,
        entry: Entry,
        tags: Tags,
        snapshot: Snapshot,
    ) -> Option<Snapshot> {
        match &self.backend {
            None => None,
            Some(Backend::Memory(m)) => m.store(key, entry, tags, &snapshot),
            Some(Backend::Redis(r)) => r.store(key, entry, tags, &snapshot).await,
        }
    }

    /// `commit` of a change that announces no rows.
    pub async fn purge(&self, tags: &[String]) -> Result<u64, AppError> {
        self.commit(Change {
            tags: tags.to_vec(),
            events: Vec::new(),
        })
        .await
    }

    /// Marks the change's tags for the read replicas (reads of them wait for this commit to be replayed), makes
    /// sure nothing an execution that started before now read under them is served, then announces the change
    /// on the bus (live queries and subscriptions, on every instance). Returns how many distinct tags were
    /// purged (entries are not indexed by tag, so they are not counted). With Redis unreachable the purge is
    /// kept and retried, nothing is served from Redis until it has been delivered, and the error is returned
    /// (and counted); the change is announced all the same.
    #[tracing::instrument(level = "debug", name = "cache.purge", skip_all, fields(cache.tags = change.tags.len()))]
    pub async fn commit(&self, mut change: Change) -> Result<u64, AppError> {
        if change.is_empty() {
            return Ok(0);
        }
        // Once, for every backend, the replicas' record and the bus: a repeated tag is one purge.
        change.tags.sort_unstable();
        change.tags.dedup();
        if let Some(replicas) = &self.replicas {
            replicas.record(&change.tags).await;
        }
        let dropped = match &self.backend {
            _ if change.tags.is_empty() => Ok(0),
            None => Ok(0),
            Some(Backend::Memory(m)) => Ok(m.purge(&change.tags)),
            Some(Backend::Redis(r)) => r.purge(&change.tags).await,
        };
        if let Ok(dropped) = &dropped {
            self.metrics.purged.inc_by(*dropped);
            tracing::debug!(tags = ?change.tags, dropped, "cache purged");
        }
        self.bus.publish(change).await;
        dropped
    }
}

impl From<Option<Entry>> for Lookup {
    fn from(found: Option<Entry>) -> Self {
        match found {
            Some(entry) => Lookup::Hit(entry),
            None => Lookup::Miss(None),
        }
    }
}

/// What a response read, as resolvers record it: a row or a list, named `Kind:id[:relation]` (`Post:7`,
/// `User:3:posts`, `Post:list`) where a name is needed. Mutations purge by these names; the one spelling of
/// each is [`Tag::name`], which `tags` uses too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tag {
    Post(i64),
    User(i64),
    Comment(i64),
    /// One author's posts (`User.posts`).
    UserPosts(i64),
    /// A post's comments and comment count.
    PostComments(i64),
    /// Every list of posts (the feed, searches, per-author filters).
    PostList,
    /// The users list.
    UserList,
}

impl Tag {
    /// The parts of the name: kind, id (if any), relation.
    fn parts(self) -> (&'static str, Option<i64>, &'static str) {
        match self {
            Tag::Post(id) => ("Post:", Some(id), ""),
            Tag::User(id) => ("User:", Some(id), ""),
            Tag::Comment(id) => ("Comment:", Some(id), ""),
            Tag::UserPosts(id) => ("User:", Some(id), ":posts"),
            Tag::PostComments(id) => ("Post:", Some(id), ":comments"),
            Tag::PostList => ("Post:list", None, ""),
            Tag::UserList => ("User:list", None, ""),
        }
    }

    /// Calls `f` with the name's three parts (kind, digits, relation), the digits formatted on the stack.
    pub fn with_parts<T>(self, f: impl FnOnce(&str, &str, &str) -> T) -> T {
        let (kind, id, rest) = self.parts();
        let mut digits = itoa::Buffer::new();
        f(kind, id.map_or("", |id| digits.format(id)), rest)
    }

    /// The length of `name`, without building it.
    pub fn name_len(self) -> usize {
        self.with_parts(|kind, digits, rest| kind.len() + digits.len() + rest.len())
    }

    /// The name purges use (`Post:7`).
    pub fn name(&self) -> String {
        self.with_parts(|kind, digits, rest| {
            let mut name = String::with_capacity(kind.len() + digits.len() + rest.len());
            name.push_str(kind);
            name.push_str(digits);
            name.push_str(rest);
            name
        })
    }
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with_parts(|kind, digits, rest| {
            f.write_str(kind)?;
            f.write_str(digits)?;
            f.write_str(rest)
        })
    }
}

/// Tag names for purges, so every call site spells them as readers record them ([`Tag`]).
pub mod tags {
    use super::Tag;

    pub fn post(id: i64) -> String {
        Tag::Post(id).name()
    }
    pub fn user(id: i64) -> String {
        Tag::User(id).name()
    }
    pub fn comment(id: i64) -> String {
        Tag::Comment(id).name()
    }
    /// Every list of posts (the feed, searches, per-author filters).
    pub const POST_LIST: &str = "Post:list";
    /// The users list.
    pub const USER_LIST: &str = "User:list";
    /// One author's posts (`User.posts`).
    pub fn user_posts(id: i64) -> String {
        Tag::UserPosts(id).name()
    }
    /// A post's comments and comment count.
    pub fn post_comments(id: i64) -> String {
        Tag::PostComments(id).name()
    }
    /// What a change to a comment (added, edited, deleted) purges: the comment, and its post's comments. So a
    /// page of a post's comments is tagged with `post_comments` alone, not with every comment on it (a page of
    /// 20 would otherwise carry 20 more tags for the cache to index on every store).
    pub fn comment_changed(comment_id: i64, post_id: i64) -> Vec<String> {
        vec![comment(comment_id), post_comments(post_id)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_their_binary_form() {
        let e = Entry {
            body: bytes::Bytes::from_static(b"{\"data\":{}}"),
            etag: "\"abc\"".into(),
            max_age: 60,
            public: false,
            stored_at: 1_700_000_000,
        };
        let d = Entry::decode(&e.encode().into()).expect("decodes");
        assert_eq!(
            (d.body, d.etag, d.max_age, d.public, d.stored_at),
            (e.body, e.etag, 60, false, 1_700_000_000)
        );
        assert!(Entry::decode(&bytes::Bytes::from_static(b"\x02garbage")).is_none());
        assert!(Entry::decode(&bytes::Bytes::new()).is_none());
    }

    /// Tags are what mutations purge by: their spelling is the contract between readers and writers.
    #[test]
    fn tags_are_spelled_as_purges_expect() {
        assert_eq!(tags::post(7), "Post:7");
        assert_eq!(tags::user(-3), "User:-3");
        assert_eq!(tags::comment(i64::MAX), format!("Comment:{}", i64::MAX));
        assert_eq!(tags::user_posts(12), "User:12:posts");
        assert_eq!(tags::post_comments(0), "Post:0:comments");
        assert_eq!(
            tags::comment_changed(5, 9),
            ["Comment:5", "Post:9:comments"]
        );
    }

    #[test]
    fn a_tracker_reports_each_tag_once_in_order() {
        let tracker = Tracker::default();
        for tag in [
            Tag::User(3),
            Tag::Post(1),
            Tag::User(3),
            Tag::PostComments(1),
            Tag::User(3),
        ] {
            tracker.tag(tag);
        }
        assert_eq!(tracker.tags(), ["Post:1", "User:3", "Post:1:comments"]);
        assert_eq!(
            tracker.take_tags(),
            [Tag::Post(1), Tag::User(3), Tag::PostComments(1)]
        );
        assert!(tracker.take_tags().is_empty());
    }

    /// The names readers' tags go by are the ones writers purge, whatever the id.
    #[test]
    fn a_tag_is_named_as_purges_spell_it() {
        for id in [0, 7, -3, i64::MAX, i64::MIN] {
            assert_eq!(Tag::Post(id).name(), format!("Post:{id}"));
            assert_eq!(Tag::User(id).to_string(), format!("User:{id}"));
            assert_eq!(Tag::Comment(id).name(), format!("Comment:{id}"));
            assert_eq!(Tag::UserPosts(id).name(), format!("User:{id}:posts"));
            assert_eq!(Tag::PostComments(id).name(), format!("Post:{id}:comments"));
        }
        assert_eq!(Tag::PostList.name(), tags::POST_LIST);
        assert_eq!(Tag::UserList.name(), tags::USER_LIST);
    }
}
