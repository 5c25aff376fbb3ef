//! The in-process backend: a moka cache bounded by bytes, and the purges of the last two hours (`purges.rs`).
//!
//! Purges are checked when an entry is read, as on Redis and against the same kind of log: an entry keeps the
//! purge number its execution started at and its tags, and is served only if none of its tags was purged
//! since. Nothing indexes entries by tag, so a store costs one insert whatever the number of tags a response
//! carries (a post page carries two dozen: the post, its comments, their authors). Kept in an index, they were
//! a tenth of a miss's CPU on `detail` (the inserts, and taking every evicted entry's tags back out). A purged
//! entry stays until it is evicted, expires, or its key is computed again; it is never served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::Expiry;

use super::purges::PurgeLog;
use super::{Entry, Key, MAX_TTL, Snapshot, Tag, Tags};

/// Each entry weighs its body plus this much, so the byte bound also bounds the number of entries.
const ENTRY_OVERHEAD: u32 = 1024;
/// And each tag what it takes in the entry's list.
const TAG_SIZE: u32 = std::mem::size_of::<Tag>() as u32;

/// An entry as kept: the response, where its execution started in purge order, and the tags it read.
struct Kept {
    entry: Entry,
    start: u64,
    tags: Tags,
}

impl Kept {
    /// The tags' names, built only when a purge since the entry's start makes them matter.
    fn tags(&self) -> impl Iterator<Item = String> + '_ {
        self.tags.iter().map(Tag::name)
    }
}

struct PerEntryTtl;

impl Expiry<Key, Arc<Kept>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Kept>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(value.entry.max_age)).min(MAX_TTL))
    }
}

/// Keys are SHA-256 digests already; moka's default SipHash over them showed in profiles of misses. foldhash
/// is seeded per process, so an attacker choosing documents still cannot aim keys at one bucket.
type Hasher = foldhash::fast::RandomState;

pub struct MemoryCache {
    entries: moka::sync::Cache<Key, Arc<Kept>, Hasher>,
    purges: Mutex<PurgeLog>,
    /// The last purge number taken, readable without the lock: an entry that started at or after it needs no
    /// look at the purged tags (most hits, where writes are rare).
    last_purge: AtomicU64,
    /// Purge numbers are never below the microseconds since this instant, so the log can forget by age.
    clock: Instant,
}

impl MemoryCache {
    pub fn new(max_bytes: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &Key, kept: &Arc<Kept>| {
                let tags = u32::try_from(kept.tags.len())
                    .unwrap_or(u32::MAX)
                    .saturating_mul(TAG_SIZE);
                u32::try_from(kept.entry.body.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(ENTRY_OVERHEAD)
                    .saturating_add(tags)
            })
            .expire_after(PerEntryTtl)
            .build_with_hasher(Hasher::default());
        Self {
            entries,
            purges: Mutex::new(PurgeLog::default()),
            last_purge: AtomicU64::new(0),
            clock: Instant::now(),
        }
    }

    fn purges(&self) -> std::sync::MutexGuard<'_, PurgeLog> {
        self.purges.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first of `keys` with a fresh entry.
    pub fn get(&self, keys: &[Key]) -> Option<Entry> {
        keys.iter().find_map(|k| {
            let kept = self.entries.get(k)?;
            // Acquire: pairs with `purge`'s release, after the purged tags were recorded.
            let fresh = kept.start >= self.last_purge.load(Ordering::Acquire)
                || self.purges().fresh(kept.start, kept.tags());
            fresh.then(|| kept.entry.clone())
        })
    }

    pub fn begin(&self) -> Snapshot {
        Snapshot {
            seq: self.purges().newest(),
            epoch: None,
        }
    }

    /// Stores the entry unless one of its tags was purged since `snapshot` (it would never be served). A purge
    /// between this check and the insert is caught when the entry is read.
    pub fn store(
        &self,
        key: Key,
        entry: Entry,
        tags: Tags,
        snapshot: &Snapshot,
    ) -> Option<Snapshot> {
        let seq = {
            let purges = self.purges();
            if !purges.fresh(snapshot.seq, tags.iter().map(Tag::name)) {
                return None;
            }
            purges.newest()
        };
        // The body kept at its exact size: the response buffer it came in holds spare capacity (a planned
        // response starts at 8 KiB), which the weigher would not count and the cache would keep alive.
        let entry = Entry {
            body: bytes::Bytes::copy_from_slice(&entry.body),
            ..entry
        };
        self.entries.insert(
            key,
            Arc::new(Kept {
                entry,
                start: snapshot.seq,
                tags,
            }),
        );
        Some(Snapshot { seq, epoch: None })
    }

    /// Purges `tags`: no entry that read one of them before now is served again. Returns how many distinct
    /// tags were purged (entries are not indexed by tag, so they cannot be counted).
    pub fn purge(&self, tags: &[String]) -> u64 {
        let now = u64::try_from(self.clock.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut purges = self.purges();
        let seq = purges.newest().saturating_add(1).max(now);
        // A repeated tag is recorded at `seq` already: counted once.
        let purged = tags.iter().filter(|tag| purges.record(tag, seq)).count();
        purges.trim();
        self.last_purge.store(seq, Ordering::Release);
        purged as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            body: bytes::Bytes::from_static(b"{}"),
            etag: "\"e\"".into(),
            max_age: 60,
            public: true,
            stored_at: 0,
        }
    }

    fn key(i: u32) -> Key {
        let mut key = [0; 32];
        key[..4].copy_from_slice(&i.to_be_bytes());
        Key(key)
    }

    /// An entry that read a tag is not served once the tag is purged, whatever else it read, even when it was
    /// stored after the purge by an execution that started before it (the race `store`'s check cannot close).
    #[test]
    fn an_entry_is_not_served_once_one_of_its_tags_is_purged() {
        let cache = MemoryCache::new(1 << 20);
        let before = cache.begin();
        let tags = |post: u32| Tags::from([Tag::Post(i64::from(post)), Tag::User(1)]);
        for i in 0..3 {
            assert!(cache.store(key(i), entry(), tags(i), &before).is_some());
        }
        assert_eq!(
            cache.purge(&["Post:1".into(), "Post:1".into()]),
            1,
            "distinct tags"
        );
        assert!(cache.get(&[key(0)]).is_some());
        assert!(cache.get(&[key(1)]).is_none());
        // The second key is tried when the first is stale.
        assert!(cache.get(&[key(1), key(2)]).is_some());
        // Written as a store that passed its check just before the purge would have.
        cache.entries.insert(
            key(3),
            Arc::new(Kept {
                entry: entry(),
                start: before.seq,
                tags: tags(1),
            }),
        );
        assert!(cache.get(&[key(3)]).is_none());
        // A shared tag purges every entry that read it.
        assert_eq!(cache.purge(&["User:1".into()]), 1);
        assert!((0..3).all(|i| cache.get(&[key(i)]).is_none()));
    }

    #[test]
    fn a_purge_hides_tagged_entries_and_refuses_older_executions() {
        let cache = MemoryCache::new(1 << 20);
        let (a, b) = (Key([1; 32]), Key([2; 32]));
        let before = cache.begin();
        assert!(
            cache
                .store(a, entry(), Tags::from([Tag::Post(1)]), &before)
                .is_some()
        );
        assert!(
            cache
                .store(b, entry(), Tags::from([Tag::Post(2)]), &before)
                .is_some()
        );
        assert_eq!(cache.purge(&["Post:1".into()]), 1);
        assert!(cache.get(&[a]).is_none());
        assert!(cache.get(&[b]).is_some());
        // An execution that began before the purge may not store under the purged tag, but may under others.
        assert!(
            cache
                .store(a, entry(), Tags::from([Tag::Post(1)]), &before)
                .is_none()
        );
        // Checked fresh up to the purge, which a request arriving after it can rely on.
        let fresh = cache
            .store(a, entry(), Tags::from([Tag::Post(3)]), &before)
            .unwrap();
        assert!(fresh.covers(&cache.begin()));
        assert!(!before.covers(&cache.begin()));
        // One that began after it may.
        let after = cache.begin();
        assert!(
            cache
                .store(a, entry(), Tags::from([Tag::Post(1)]), &after)
                .is_some()
        );
        assert_eq!(cache.purge(&["Post:1".into(), "Post:3".into()]), 2);
        assert!(cache.get(&[a]).is_none());
    }
}
