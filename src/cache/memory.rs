//! The in-process backend: a moka cache bounded by bytes, plus a tag index and the purge sequence.
//!
//! `store` and `purge` run under one lock, so "were my tags purged since I started?" and the write happen as one
//! step, as do "bump the tags' sequence" and "drop their entries". Lookups do not take that lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::notification::RemovalCause;
use smallvec::SmallVec;

use super::{Entry, Key, MAX_TTL, Snapshot};

/// Each entry weighs its body plus this much, so the byte bound also bounds the number of entries.
const ENTRY_OVERHEAD: u32 = 1024;
/// And this much per tag: its share of the tag index (the key in the tag's list, and for the many tags only one
/// entry reads, such as a post's, the list and the tag's name, and the tag in the entry's own list of tags).
/// Unweighed, with a hash set per tag, a 32 MiB cache took 114 MB of memory under rotating post pages.
const TAG_OVERHEAD: u32 = 128;
/// Purge sequence numbers are kept this long: far longer than any execution may run.
const GEN_RETENTION: Duration = Duration::from_secs(3600);
/// The index is not swept below this many keys.
const MIN_SWEEP: usize = 4096;

/// An entry as kept: the response, and the tags that index it (for its weight, and to take it out of the
/// index when it is evicted; the names are shared with the index).
#[derive(Clone)]
struct Kept {
    entry: Entry,
    tags: Tags,
}

type Tags = Arc<[Arc<str>]>;

struct PerEntryTtl;

impl Expiry<Key, Kept> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Kept,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(value.entry.max_age)).min(MAX_TTL))
    }
}

#[derive(Default)]
struct State {
    seq: u64,
    /// Tag → (sequence number of its last purge, when).
    gens: HashMap<String, (u64, Instant)>,
    /// Tag → keys of the entries stored under it (some may have expired since, and a key stored again after
    /// its entry expired may appear twice until the next sweep). Compact, because it is most of what an entry
    /// costs beyond its body: most tags (a post's) index one entry, which `SmallVec` keeps inline.
    index: HashMap<Arc<str>, SmallVec<[Key; 1]>>,
    /// Keys in the index.
    indexed: usize,
    /// `indexed` after the last sweep of the index (see `store`).
    swept: usize,
}

pub struct MemoryCache {
    entries: moka::sync::Cache<Key, Kept>,
    state: Mutex<State>,
    /// Entries moka evicted or expired, to be taken out of the index under `state`'s lock. A queue of its own:
    /// moka may call its listener inside an insert, which `store` makes holding `state`.
    evicted: Arc<Mutex<Vec<(Key, Tags)>>>,
}

impl MemoryCache {
    pub fn new(max_bytes: u64) -> Self {
        let evicted: Arc<Mutex<Vec<(Key, Tags)>>> = Arc::default();
        let queue = Arc::clone(&evicted);
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &Key, kept: &Kept| {
                u32::try_from(kept.entry.body.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(ENTRY_OVERHEAD)
                    .saturating_add(
                        u32::try_from(kept.tags.len())
                            .unwrap_or(u32::MAX)
                            .saturating_mul(TAG_OVERHEAD),
                    )
            })
            .expire_after(PerEntryTtl)
            .eviction_listener(move |key: Arc<Key>, kept: Kept, cause: RemovalCause| {
                // Purges take their entries out of the index themselves; a replaced entry keeps its key.
                if cause.was_evicted() {
                    queue
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((*key, kept.tags));
                }
            })
            .build();
        Self {
            entries,
            state: Mutex::new(State::default()),
            evicted,
        }
    }

    /// Takes the entries moka evicted or expired out of the index, unless stored again since.
    fn unindex_evicted(&self, state: &mut State) {
        let evicted = std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|p| p.into_inner()));
        for (key, tags) in evicted {
            if self.entries.contains_key(&key) {
                continue;
            }
            for tag in tags.iter() {
                let Some(keys) = state.index.get_mut(&**tag) else {
                    continue;
                };
                let before = keys.len();
                keys.retain(|k| *k != key);
                state.indexed -= before - keys.len();
                if keys.is_empty() {
                    state.index.remove(&**tag);
                }
            }
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, keys: &[Key]) -> Option<Entry> {
        keys.iter()
            .find_map(|k| self.entries.get(k).map(|kept| kept.entry))
    }

    pub fn begin(&self) -> Snapshot {
        Snapshot {
            seq: self.state().seq,
            epoch: None,
        }
    }

    pub fn store(
        &self,
        key: Key,
        entry: Entry,
        tags: Vec<String>,
        snapshot: &Snapshot,
    ) -> Option<Snapshot> {
        let mut state = self.state();
        let stale = tags.iter().any(|t| {
            state
                .gens
                .get(t)
                .is_some_and(|(seq, _)| *seq > snapshot.seq)
        });
        if stale {
            return None;
        }
        // The body kept at its exact size: the response buffer it came in holds spare capacity (a planned
        // response starts at 8 KiB), which the weigher would not count and the cache would keep alive.
        let entry = Entry {
            body: bytes::Bytes::copy_from_slice(&entry.body),
            ..entry
        };
        self.unindex_evicted(&mut state);
        let names: Tags = tags
            .iter()
            .map(|tag| match state.index.get_key_value(tag.as_str()) {
                Some((name, _)) => Arc::clone(name),
                None => Arc::from(tag.as_str()),
            })
            .collect();
        for name in names.iter() {
            state.index.entry(Arc::clone(name)).or_default().push(key);
            state.indexed += 1;
        }
        self.entries.insert(key, Kept { entry, tags: names });
        // Evicted entries leave the index as moka reports them (above). Should any linger (a report lost to a
        // race with a store of the same key), sweep them out when the index has doubled since the last sweep, so
        // it stays within about twice what the cache holds and a sweep (a walk of the whole index, under the
        // lock every store takes) costs each store a constant share. Without the reports, sweeps were all that
        // kept the index in check, and showed as a p99 of 25 ms on `detail` with ids rotating.
        if state.indexed > (2 * state.swept).max(MIN_SWEEP) {
            let entries = &self.entries;
            state.index.retain(|_, keys| {
                keys.retain(|k| entries.contains_key(k));
                if keys.len() > 1 {
                    keys.sort_unstable_by_key(|k| k.0);
                    keys.dedup();
                }
                if keys.spilled() && keys.len() <= keys.capacity() / 4 {
                    keys.shrink_to_fit();
                }
                !keys.is_empty()
            });
            state.indexed = state.index.values().map(SmallVec::len).sum();
            state.swept = state.indexed;
        }
        Some(Snapshot {
            seq: state.seq,
            epoch: None,
        })
    }

    pub fn purge(&self, tags: &[String]) -> u64 {
        let mut state = self.state();
        self.unindex_evicted(&mut state);
        state.seq += 1;
        let seq = state.seq;
        let now = Instant::now();
        let mut dropped = 0;
        for tag in tags {
            state.gens.insert(tag.clone(), (seq, now));
            if let Some(keys) = state.index.remove(tag.as_str()) {
                state.indexed -= keys.len();
                for key in keys {
                    if self.entries.remove(&key).is_some() {
                        dropped += 1;
                    }
                }
            }
        }
        if state.gens.len() > 10_000 {
            state
                .gens
                .retain(|_, (_, at)| now.duration_since(*at) < GEN_RETENTION);
        }
        dropped
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

    /// A response carries dozens of tags (a post page: the post, its comments, their authors), and with ids
    /// rotating most entries stored are evicted: the index must not keep them all.
    #[test]
    fn the_index_keeps_about_what_the_cache_holds() {
        // Room for about 500 entries: most of the 5,000 stored are evicted, and linger in the index.
        let cache = MemoryCache::new(500 * u64::from(ENTRY_OVERHEAD + 2 + 40 * TAG_OVERHEAD));
        let snapshot = cache.begin();
        for i in 0..5_000_u32 {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            let tags = (0..40).map(|t| format!("Comment:{}", i * 40 + t)).collect();
            assert!(cache.store(Key(key), entry(), tags, &snapshot).is_some());
        }
        let state = cache.state();
        assert_eq!(
            state.indexed,
            state.index.values().map(SmallVec::len).sum::<usize>()
        );
        // What is left indexed is about what the cache holds (500 entries of 40 tags), not everything ever
        // stored (200,000 keys).
        assert!(
            state.indexed < 4 * 40 * 500,
            "{} keys indexed",
            state.indexed
        );
        // And what it holds is still found by a purge.
        drop(state);
        let live = (0..5_000_u32)
            .rev()
            .find(|i| {
                let mut key = [0; 32];
                key[..4].copy_from_slice(&i.to_be_bytes());
                cache.entries.contains_key(&Key(key))
            })
            .expect("the newest entries are kept");
        assert_eq!(cache.purge(&[format!("Comment:{}", live * 40 + 7)]), 1);
    }

    #[test]
    fn a_purge_drops_tagged_entries_and_refuses_older_executions() {
        let cache = MemoryCache::new(1 << 20);
        let (a, b) = (Key([1; 32]), Key([2; 32]));
        let before = cache.begin();
        assert!(
            cache
                .store(a, entry(), vec!["Post:1".into()], &before)
                .is_some()
        );
        assert!(
            cache
                .store(b, entry(), vec!["Post:2".into()], &before)
                .is_some()
        );
        assert_eq!(cache.purge(&["Post:1".into()]), 1);
        assert!(cache.get(&[a]).is_none());
        assert!(cache.get(&[b]).is_some());
        // An execution that began before the purge may not store under the purged tag, but may under others.
        assert!(
            cache
                .store(a, entry(), vec!["Post:1".into()], &before)
                .is_none()
        );
        // Checked fresh up to the purge, which a request arriving after it can rely on.
        let fresh = cache
            .store(a, entry(), vec!["Post:3".into()], &before)
            .unwrap();
        assert!(fresh.covers(&cache.begin()));
        assert!(!before.covers(&cache.begin()));
        // One that began after it may.
        let after = cache.begin();
        assert!(
            cache
                .store(a, entry(), vec!["Post:1".into()], &after)
                .is_some()
        );
        assert_eq!(cache.purge(&["Post:1".into(), "Post:3".into()]), 1);
    }
}
