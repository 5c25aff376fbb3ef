//! The Redis backend, shared by every instance, on a single server or a Redis Cluster (one protocol for both).
//!
//! Purges are checked when an entry is read, not indexed when it is written: a store is one `SET` whatever the
//! number of tags a response carries, and a purge is one write whatever the number of entries it covers.
//!
//! Keys (under `FOLIO_CACHE_PREFIX`):
//! - `{m}seq`, `{m}epoch`, `{m}pending`, `{m}purged`: the purge counter (never below Redis's clock in
//!   microseconds), a random id of the data set, purges not yet delivered everywhere (a sorted set of tags by
//!   deadline), and each recently purged tag with the number of its last purge (a sorted set). The `{m}` hash
//!   tag keeps them in one slot, so every purge is one atomic step.
//! - `e:<hash>`: an entry, with the purge number its execution started at, the epoch, and its tags.
//!
//! Freshness (a result read before a purge is never served after the purge returned):
//! - **begin**: read `seq` (the execution's start).
//! - **store**: `SET` the entry with its start, epoch and tags; nothing is checked.
//! - **purge**: take a new `seq` and record it as the last purge of each tag, in one script. Purges older than
//!   [`purges::WINDOW`] are forgotten: every entry that started before them has expired.
//! - **lookup**: read the entries with `seq` and the epoch (one `MGET` on a single server; on a cluster the
//!   entries first, each in its slot), then the purges since this instance last asked, kept in [`Purged`]. An
//!   entry is served only if it has the current epoch and none of its tags was purged after it started. The
//!   purges are read after the entries, so every purge that returned before the entries were read is seen; no
//!   transaction is needed (a purge in between is seen too, and only turns entries away).
//! - **replicated** (cluster): Redis replicates asynchronously, so a purge is delivered only once `WAIT` says
//!   every master that has a replica passed it on; otherwise a master that crashed right after acknowledging it
//!   could be replaced by a replica without it.
//! - **undelivered**: a purge that could not be written, or not reach the replicas, is recorded in
//!   `{m}pending` before the mutation answers; while anything is pending no instance serves or stores a
//!   response, and every instance retries the pending purges until one delivers them.
//!
//! A purge cannot count the entries it makes stale (nothing indexes them): it answers how many tags it purged.
//! Stale entries stay in Redis until they expire or their key is stored again.
//!
//! - **lookups** (single server): one call at a time; requests that ask meanwhile are answered by the next one.
//!   Each keeps the `seq` it read for a while ([`RedisCache::recent`]): an execution that starts without
//!   waiting for its lookup is stored as having started there, before its reads.
//!
//! Every call has a short timeout. On any failure the request is answered from the database and counted; a
//! purge that could not be delivered at all is kept by this instance, retried in the background, and until it
//! is delivered this instance serves nothing from Redis.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use prometheus::IntCounter;
use tokio::sync::oneshot;

use super::purges::{self, PurgeLog};
use super::{CacheConfig, Entry, Key, Lookup, MAX_TTL, Snapshot, Tags, unix_now};
use crate::error::AppError;
use crate::redis_conn::{Conn, RedisConn};

/// Lifetime of the purge counter, the epoch and the recent purges, refreshed by every use; they always expire
/// together.
const META_TTL_SECS: u64 = 24 * 3600;
/// How long an undelivered purge keeps the cache off: past it, every entry it could have missed has expired.
const PENDING_SECS: u64 = MAX_TTL.as_secs() + 60;
/// How long a mutation keeps trying to record an undelivered purge before it answers.
const RECORD_FOR: Duration = Duration::from_secs(3);
/// How old a snapshot an execution that does not wait for its lookup may start at (`RedisCache::recent`): the
/// older, the more purges since count against its entry. Under load, lookups take one every few milliseconds.
const RECENT: Duration = Duration::from_millis(500);
/// First byte of a stored value (an entry with its start, epoch and tags); anything else is not served.
const STORED_V2: u8 = 2;

// Starts the purge counter, if it is missing, at Redis's clock in microseconds: a counter that was lost never
// restarts below the purge numbers entries still carry.
const INIT_SEQ: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], t[1] .. string.format('%06d', tonumber(t[2])))
end
";

// KEYS: seq, epoch, pending, purged. ARGV: a fresh epoch (used if there is none), meta ttl, now (s), the lowest
// purge number to return (`(n` for above n; `+inf` for none). Returns {seq, epoch, number of undelivered purges,
// {tag, purge number, ...}}.
const BEGIN: &str = r"
redis.call('SET', KEYS[2], ARGV[1], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), redis.call('ZCOUNT', KEYS[3], ARGV[3], '+inf'),
  redis.call('ZRANGE', KEYS[4], ARGV[4], '+inf', 'BYSCORE', 'WITHSCORES')}
";

// KEYS: seq, epoch, purged. ARGV: a fresh epoch, meta ttl, window (µs), then the tags. Takes the next purge
// number (at least Redis's clock in µs), records it as each tag's last purge, forgets purges older than the
// window, and returns the number. (Numbers are formatted by hand: Lua would print them with 14 digits.)
const PURGE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local s = redis.call('INCR', KEYS[1])
if s < now then
  s = now
  redis.call('SET', KEYS[1], string.format('%.0f', s))
end
local seq = string.format('%.0f', s)
redis.call('SET', KEYS[2], ARGV[1], 'NX')
for i = 4, #ARGV do redis.call('ZADD', KEYS[3], seq, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. string.format('%.0f', s - tonumber(ARGV[3])))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return seq
";

// KEYS: pending. ARGV: now (s), then tag, score pairs. Forgets the delivered tags that nobody re-recorded since
// they were read, and the expired ones.
const DELIVERED: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for i = 2, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return 0
";

/// The deployment's `{m}` keys (see the module header).
struct Meta {
    seq: String,
    epoch: String,
    pending: String,
    purged: String,
}

struct Scripts {
    begin: redis::Script,
    purge: redis::Script,
    delivered: redis::Script,
}

pub struct RedisCache {
    redis: Arc<RedisConn>,
    prefix: String,
    /// Tags whose purge could not be delivered yet, nor recorded in `{m}pending`.
    pending: Mutex<HashSet<String>>,
    scripts: Scripts,
    errors: IntCounter,
    /// The `{m}` keys, named once: every lookup names them.
    meta: Meta,
    /// The purges this instance has read, to check entries against.
    purged: Mutex<Purged>,
    /// Lookups and stores waiting for the call running (single server).
    calls: Mutex<Calls>,
    lookup_calls: IntCounter,
    /// The snapshot the last lookup took, and when (see `recent`).
    recent: Mutex<Option<(std::time::Instant, Snapshot)>>,
}

/// `begin`'s answer: the sequence number, the epoch, how many purges are undelivered, and the purges asked for.
type Begun = (u64, String, u64, Vec<(String, f64)>);

/// This instance's copy of `{m}purged`: each tag's last purge, as of purge number `upto` of data set `epoch`.
/// Each lookup reads only the purges after `upto`, usually none.
#[derive(Default)]
struct Purged {
    epoch: Option<String>,
    upto: u64,
    log: PurgeLog,
}

impl Purged {
    /// The argument of `BEGIN` that asks for the purges this copy lacks.
    fn since(&self) -> String {
        if self.epoch.is_none() {
            "-inf".into()
        } else {
            format!("({}", self.upto)
        }
    }

    /// Takes in what a lookup read: purges after `asked`, up to `seq` of `epoch`. Returns false if the data set
    /// changed under a copy that was not empty: what was read may lack purges, so the lookup serves nothing and
    /// the next one reads them all.
    fn absorb(&mut self, epoch: &str, seq: u64, asked: &str, purges: Vec<(String, f64)>) -> bool {
        if self.epoch.as_deref() != Some(epoch) {
            let complete = asked == "-inf";
            *self = Self {
                epoch: complete.then(|| epoch.to_owned()),
                ..Self::default()
            };
            if !complete {
                return false;
            }
        }
        for (tag, number) in purges {
            self.log.record(&tag, number as u64);
        }
        self.upto = self.upto.max(seq);
        // Redis forgets purges past the window by its clock, which purge numbers never fall behind.
        self.log.trim();
        true
    }

    /// Whether an entry that started at `start` and read `tags` is fresh: none of them purged since.
    fn fresh<'t>(&self, start: u64, tags: impl Iterator<Item = &'t str>) -> bool {
        self.log.fresh(start, tags)
    }
}

/// An entry as stored in Redis: the execution's start and epoch, its tags, then the entry. The tags are read
/// only when a purge since the start makes them matter (a feed page carries about sixty).
struct Stored<'a> {
    start: u64,
    epoch: &'a str,
    /// Each tag as a `u16` length and its bytes.
    tags: &'a [u8],
    entry: &'a [u8],
}

impl<'a> Stored<'a> {
    #[cfg(test)]
    fn encode(start: u64, epoch: &str, tags: &[super::Tag], entry: &Entry) -> Option<Vec<u8>> {
        let snapshot = Snapshot {
            seq: start,
            epoch: Some(epoch.into()),
        };
        let store = Store::new(String::new(), &snapshot, tags.into(), entry.clone())?;
        let mut out = Vec::with_capacity(store.len);
        store.write_value(&mut out).ok()?;
        Some(out)
    }

    fn decode(raw: &'a [u8]) -> Option<Self> {
        let (&version, rest) = raw.split_first()?;
        if version != STORED_V2 {
            return None;
        }
        let start = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let (&epoch_len, rest) = rest.get(8..)?.split_first()?;
        let epoch = std::str::from_utf8(rest.get(..usize::from(epoch_len))?).ok()?;
        let rest = rest.get(usize::from(epoch_len)..)?;
        let block = usize::try_from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
        let tags = rest.get(4..4 + block)?;
        let entry = rest.get(4 + block..)?;
        // Checked whole here, so that reading them later cannot fail.
        let mut left = tags;
        while !left.is_empty() {
            let len = usize::from(u16::from_be_bytes(left.get(..2)?.try_into().ok()?));
            std::str::from_utf8(left.get(2..2 + len)?).ok()?;
            left = &left[2 + len..];
        }
        Some(Self {
            start,
            epoch,
            tags,
            entry,
        })
    }

    /// The tags (checked by `decode`).
    fn tags(&self) -> impl Iterator<Item = &'a str> {
        let mut rest = self.tags;
        std::iter::from_fn(move || {
            let len = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
            let tag = rest.get(2..2 + len)?;
            rest = rest.get(2 + len..)?;
            std::str::from_utf8(tag).ok()
        })
    }
}

/// One request's lookup, queued: the entry keys to try in order, and where its answer goes.
struct Asked {
    keys: Vec<String>,
    answer: oneshot::Sender<Lookup>,
}

/// An entry to write, queued: the parts of its stored value, written straight into the `SET` that sends it,
/// so the body is copied into the command once.
struct Store {
    name: String,
    start: u64,
    epoch: Arc<str>,
    tags: Tags,
    entry: Entry,
    ttl: u64,
    /// The stored value's length, and its tag block's.
    len: usize,
    block: u32,
}

impl Store {
    /// The write of `entry` under `name`, started at `snapshot` and having read `tags`; `None` without an epoch,
    /// or when it or the tags are too long to be written whole.
    fn new(name: String, snapshot: &Snapshot, tags: Tags, entry: Entry) -> Option<Self> {
        let epoch = Arc::clone(snapshot.epoch.as_ref()?);
        u8::try_from(epoch.len()).ok()?;
        // A tag's name is a few dozen bytes at most: its `u16` length always fits.
        let block: usize = tags.iter().map(|tag| 2 + tag.name_len()).sum();
        u32::try_from(block).ok()?;
        Some(Self {
            len: 14 + epoch.len() + block + entry.encoded_len(),
            block: block as u32,
            ttl: u64::from(entry.max_age).min(MAX_TTL.as_secs()),
            name,
            start: snapshot.seq,
            epoch,
            tags,
            entry,
        })
    }

    /// Writes the stored value (`Stored`); its lengths were checked by `new`.
    fn write_value(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut head = [0u8; 10];
        head[0] = STORED_V2;
        head[1..9].copy_from_slice(&self.start.to_be_bytes());
        head[9] = self.epoch.len() as u8;
        out.write_all(&head)?;
        out.write_all(self.epoch.as_bytes())?;
        out.write_all(&self.block.to_be_bytes())?;
        for tag in self.tags.iter() {
            tag.with_parts(|kind, digits, rest| {
                let len = kind.len() + digits.len() + rest.len();
                out.write_all(&(len as u16).to_be_bytes())?;
                out.write_all(kind.as_bytes())?;
                out.write_all(digits.as_bytes())?;
                out.write_all(rest.as_bytes())
            })?;
        }
        self.entry.write_to(out)
    }

    /// `SET name value EX ttl`; `None` if the value could not be written (it then is not stored).
    fn command(&self) -> Option<redis::Cmd> {
        use redis::RedisWrite;
        let mut cmd = redis::Cmd::with_capacity(5, 3 + self.name.len() + self.len + 2 + 20);
        cmd.arg("SET").arg(&self.name);
        self.write_value(&mut cmd.writer_for_next_arg()).ok()?;
        cmd.arg("EX").arg(self.ttl);
        Some(cmd)
    }
}

/// On a single server, lookups and stores are one Redis call at a time: requests asking while one runs wait,
/// and the next call answers all of them and writes what they computed. Under load a call serves several
/// requests, and each request's share of a round trip (system calls and wake-ups on both sides, Redis's
/// per-call work) is what the cache cost: with the store disabled, one lookup per request took a fifth of
/// `detail`'s throughput on two cores. A quiet service never waits. A store is not waited for: a later lookup
/// of this instance is in the same call, after it, or in a later one.
#[derive(Default)]
struct Calls {
    running: bool,
    asked: Vec<Asked>,
    stores: Vec<Store>,
}

impl RedisCache {
    /// The cache on `redis`. An unreachable Redis is not fatal: the service answers from the database until
    /// Redis can be reached.
    pub fn new(
        redis: Arc<RedisConn>,
        config: &CacheConfig,
        errors: IntCounter,
        lookup_calls: IntCounter,
    ) -> Arc<Self> {
        let cache = Arc::new(Self {
            redis,
            prefix: config.prefix.clone(),
            pending: Mutex::new(HashSet::new()),
            scripts: Scripts {
                begin: redis::Script::new(&format!("{INIT_SEQ}{BEGIN}")),
                purge: redis::Script::new(&format!("{INIT_SEQ}{PURGE}")),
                delivered: redis::Script::new(DELIVERED),
            },
            errors,
            meta: {
                let name = |name: &str| format!("{}{{m}}{name}", config.prefix);
                Meta {
                    seq: name("seq"),
                    epoch: name("epoch"),
                    pending: name("pending"),
                    purged: name("purged"),
                }
            },
            purged: Mutex::new(Purged::default()),
            calls: Mutex::new(Calls::default()),
            lookup_calls,
            recent: Mutex::new(None),
        });
        tokio::spawn(deliver_pending(Arc::downgrade(&cache)));
        cache
    }

    fn entry_key(&self, key: &Key) -> String {
        let mut name = String::with_capacity(self.prefix.len() + 66);
        name.push_str(&self.prefix);
        name.push_str("e:");
        key.push_hex(&mut name);
        name
    }

    /// `BEGIN`'s keys, in its order.
    fn begin_keys(&self) -> [&str; 4] {
        let m = &self.meta;
        [&m.seq, &m.epoch, &m.pending, &m.purged]
    }

    /// Runs one Redis call, counting and logging failures.
    async fn call<T, F>(&self, what: &'static str, f: impl FnOnce(Conn) -> F) -> Option<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match self.redis.call(f).await {
            Ok(value) => Some(value),
            Err(error) => {
                self.errors.inc();
                tracing::warn!(%error, operation = what, "Redis call failed; answering without the cache");
                None
            }
        }
    }

    fn has_pending(&self) -> bool {
        !self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    fn since(&self) -> String {
        self.purged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .since()
    }

    /// Queues a lookup or a store for the next call, starting the calls if none is running (single server).
    fn queue(self: &Arc<Self>, add: impl FnOnce(&mut Calls)) {
        let start = {
            let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
            add(&mut calls);
            !std::mem::replace(&mut calls.running, true)
        };
        if start {
            // On a task of its own: a request that goes away must not strand the others' answers.
            let cache = Arc::clone(self);
            tokio::spawn(async move { cache.run_calls().await });
        }
    }

    pub async fn get(self: &Arc<Self>, keys: &[Key]) -> Lookup {
        if self.has_pending() && !self.flush_pending().await {
            return Lookup::Bypass;
        }
        let keys: Vec<String> = keys.iter().map(|key| self.entry_key(key)).collect();
        if !self.redis.is_cluster() {
            let (answer, answered) = oneshot::channel();
            self.queue(|calls| calls.asked.push(Asked { keys, answer }));
            return answered.await.unwrap_or(Lookup::Bypass);
        }
        // On a cluster the entries are in different slots: concurrent commands on the multiplexed connections,
        // and only then the purges, so that every purge that returned before the entries were read is seen.
        let lookups = keys.iter().map(|name| {
            let name = name.as_str();
            self.call("get", move |mut conn| async move {
                redis::cmd("GET")
                    .arg(name)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
            })
        });
        let mut values = Vec::with_capacity(keys.len());
        for value in join_all(lookups).await {
            match value {
                Some(value) => values.push(value),
                None => return Lookup::Bypass,
            }
        }
        let since = self.since();
        let begun = self.run_begin("get", &since).await;
        let Some(snapshot) = begun.and_then(|begun| self.absorb(begun, &since)) else {
            return Lookup::Bypass;
        };
        self.answer(values, snapshot)
    }

    /// Takes in the purges a lookup read. Returns the snapshot its entries are checked against, or `None` when
    /// nothing may be served or stored (purges undelivered, or the data set changed).
    fn absorb(&self, (seq, epoch, stuck, purges): Begun, since: &str) -> Option<Snapshot> {
        let absorbed = self
            .purged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .absorb(&epoch, seq, since, purges);
        let snapshot = (absorbed && stuck == 0 && !self.has_pending()).then(|| Snapshot {
            seq,
            epoch: Some(epoch.into()),
        });
        *self.recent.lock().unwrap_or_else(|p| p.into_inner()) = snapshot
            .as_ref()
            .map(|s| (std::time::Instant::now(), s.clone()));
        snapshot
    }

    /// A point in purge order this instance read less than [`RECENT`] ago, if nothing stops storing: an
    /// execution that starts now, without waiting for its lookup, may be stored as having started there. Its
    /// entry then claims an earlier start than its reads had, which only turns it away sooner (a purge between
    /// the two counts against it), never serves it stale.
    pub fn recent(&self) -> Option<Snapshot> {
        if self.has_pending() {
            return None;
        }
        match &*self.recent.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((at, snapshot)) if at.elapsed() < RECENT => Some(snapshot.clone()),
            _ => None,
        }
    }

    /// The first of `values` (one request's keys, in order) that is fresh as of `snapshot`.
    fn answer(&self, values: Vec<Option<Vec<u8>>>, snapshot: Snapshot) -> Lookup {
        let purged = self.purged.lock().unwrap_or_else(|p| p.into_inner());
        let hit = values.into_iter().flatten().find_map(|raw| {
            let raw = bytes::Bytes::from(raw);
            let stored = Stored::decode(&raw)?;
            let current = snapshot.epoch.as_deref() == Some(stored.epoch);
            (current && purged.fresh(stored.start, stored.tags()))
                .then(|| Entry::decode(&raw.slice_ref(stored.entry)))
                .flatten()
        });
        match hit {
            Some(entry) => Lookup::Hit(entry),
            None => Lookup::Miss(Some(snapshot)),
        }
    }

    /// Sends the queued stores and answers the queued lookups, one call for all that queued during the previous
    /// one, until none is left (single server).
    async fn run_calls(&self) {
        loop {
            // Let the requests already runnable on this worker queue their lookups first: under load a call then
            // serves about six requests instead of four (`detail`, 32 connections), and each call costs Redis a
            // wake-up and a read and a write. A quiet service does not wait: nothing else is runnable.
            tokio::task::yield_now().await;
            let (asked, stores) = {
                let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
                if calls.asked.is_empty() && calls.stores.is_empty() {
                    calls.running = false;
                    return;
                }
                (
                    std::mem::take(&mut calls.asked),
                    std::mem::take(&mut calls.stores),
                )
            };
            self.lookup_calls.inc();
            let mut answers = self.lookups(&asked, &stores).await;
            if let Some(None) = answers {
                // The purge counter or the epoch is missing (a new data set): `begin`'s script makes them.
                answers = match self.begin().await {
                    Some(_) => self.lookups(&asked, &[]).await,
                    None => None,
                };
            }
            let Some(Some((snapshot, found))) = answers else {
                for one in asked {
                    let _ = one.answer.send(Lookup::Bypass);
                }
                continue;
            };
            let mut found = found.into_iter();
            for one in asked {
                let values = found.by_ref().take(one.keys.len()).collect();
                let _ = one.answer.send(self.answer(values, snapshot.clone()));
            }
        }
    }

    /// One call: `stores`, then the purge counter, the epoch and the entries `asked` for (one `MGET`), then the
    /// undelivered purges and the purges this instance lacks, pipelined in that order on the one connection. Not
    /// a transaction: reading the purges after the entries is all freshness needs (module header), and
    /// `MULTI`/`EXEC` made Redis queue and copy every command and the client parse a reply per command twice.
    /// Plain commands, not a script: Lua copies every value it reads and returns (a feed page is 4-8 KiB), which cost
    /// Redis 10 µs per entry served, and a script call cost more than the `MGET`. `None` if the call failed,
    /// `Some(None)` if the counter or the epoch is missing, and a snapshot of `None` when nothing may be served.
    #[allow(clippy::type_complexity)]
    async fn lookups(
        &self,
        asked: &[Asked],
        stores: &[Store],
    ) -> Option<Option<(Snapshot, Vec<Option<Vec<u8>>>)>> {
        let since = self.since();
        let mut pipe = redis::Pipeline::with_capacity(stores.len() + 3);
        for set in stores.iter().filter_map(Store::command) {
            pipe.add_command(set).ignore();
        }
        let names = asked.iter().flat_map(|one| &one.keys);
        let mut mget = redis::Cmd::with_capacity(
            3 + names.clone().count(),
            4 + self.meta.seq.len()
                + self.meta.epoch.len()
                + names.clone().map(String::len).sum::<usize>(),
        );
        mget.arg("MGET").arg(&self.meta.seq).arg(&self.meta.epoch);
        for name in names {
            mget.arg(name);
        }
        pipe.add_command(mget);
        pipe.cmd("ZCOUNT")
            .arg(&self.meta.pending)
            .arg(unix_now())
            .arg("+inf");
        pipe.cmd("ZRANGE")
            .arg(&self.meta.purged)
            .arg(&since)
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES");
        type Answer = (Vec<Option<Vec<u8>>>, u64, Vec<(String, f64)>);
        let (found, stuck, purges): Answer = self
            .call("get", |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        let mut found = found.into_iter();
        let seq = found.next().flatten();
        let epoch = found.next().flatten();
        let (Some(seq), Some(epoch)) = (seq, epoch) else {
            return Some(None);
        };
        let seq = std::str::from_utf8(&seq).ok()?.parse().ok()?;
        let epoch = String::from_utf8(epoch).ok()?;
        let snapshot = self.absorb((seq, epoch, stuck, purges), &since)?;
        Some(Some((snapshot, found.collect())))
    }

    /// `BEGIN`'s script (which also makes the purge counter and the epoch if they are missing, and keeps them
    /// from expiring), asking for the purges `since`.
    async fn run_begin(&self, what: &'static str, since: &str) -> Option<Begun> {
        let keys = self.begin_keys();
        let fresh_epoch = uuid::Uuid::new_v4().simple().to_string();
        let script = &self.scripts.begin;
        let now = unix_now();
        self.call(what, |mut conn| async move {
            script
                .key(&keys[..])
                .arg(fresh_epoch)
                .arg(META_TTL_SECS)
                .arg(now)
                .arg(since)
                .invoke_async(&mut conn)
                .await
        })
        .await
    }

    pub async fn begin(&self) -> Option<Snapshot> {
        if self.has_pending() {
            return None;
        }
        let (seq, epoch, stuck, _) = self.run_begin("begin", "+inf").await?;
        (stuck == 0).then(|| Snapshot {
            seq,
            epoch: Some(epoch.into()),
        })
    }

    /// Writes the entry with what a lookup needs to check it: where its execution started, and its tags.
    pub async fn store(
        self: &Arc<Self>,
        key: Key,
        entry: Entry,
        tags: Tags,
        snapshot: &Snapshot,
    ) -> Option<Snapshot> {
        let write = Store::new(self.entry_key(&key), snapshot, tags, entry)?;
        if !self.redis.is_cluster() {
            self.queue(|calls| calls.stores.push(write));
            return Some(snapshot.clone());
        }
        let set = write.command()?;
        let stored: Option<()> = self
            .call("store", |mut conn| async move {
                set.query_async(&mut conn).await
            })
            .await;
        stored.map(|()| snapshot.clone())
    }

    /// Purges `tags`, which are distinct (`Cache::commit` deduplicates them). Returns how many were purged.
    pub async fn purge(&self, tags: &[String]) -> Result<u64, AppError> {
        let (purged, failed) = self.purge_now(tags).await;
        if failed.is_empty() {
            return Ok(purged);
        }
        // Every instance must stop serving what the undelivered tags may hold before this mutation answers.
        if !self.record_pending(&failed, RECORD_FOR).await {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(failed);
        }
        Err(AppError::Unavailable(
            "The cache could not be purged now; the purge will be retried.".into(),
        ))
    }

    /// Purges `tags`, in one step. Returns how many tags were purged and those whose purge did not get through
    /// (all or none).
    async fn purge_now(&self, tags: &[String]) -> (u64, Vec<String>) {
        let keys = [&self.meta.seq, &self.meta.epoch, &self.meta.purged];
        let fresh_epoch = uuid::Uuid::new_v4().simple().to_string();
        let script = &self.scripts.purge;
        let window = purges::WINDOW.as_micros() as u64;
        let seq: Option<String> = self
            .call("purge", |mut conn| async move {
                script
                    .key(&keys[..])
                    .arg(fresh_epoch)
                    .arg(META_TTL_SECS)
                    .arg(window)
                    .arg(tags)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        if seq.is_none() || !self.replicated().await {
            // Not written, or not on a replica yet: a failover now could promote one without this purge.
            return (0, tags.to_vec());
        }
        (tags.len() as u64, Vec::new())
    }

    /// On a cluster, whether this connection's writes so far (a purge's) have reached a replica of every master
    /// that has one, so that a failover cannot promote a replica without them: Redis replicates asynchronously,
    /// and a purge a master acknowledged and lost in a crash would leave the replica serving what it dropped.
    /// `WAIT` goes to every master and answers the fewest replicas that confirmed; when that is none, a master
    /// with no replica in sync (none attached, or still in its first sync) has nothing to lose to a failover, so
    /// only masters that have one count.
    async fn replicated(&self) -> bool {
        if !self.redis.is_cluster() {
            return true;
        }
        let wait_ms = (self.redis.timeout().as_millis() / 2).max(1) as u64;
        let confirmed: Option<i64> = self
            .call("purge", |mut conn| async move {
                redis::cmd("WAIT")
                    .arg(1)
                    .arg(wait_ms)
                    .query_async(&mut conn)
                    .await
            })
            .await;
        match confirmed {
            Some(n) if n >= 1 => return true,
            None => return false,
            Some(_) => {}
        }
        // Some master's replica did not confirm: fine only if that master has no replica at all.
        let infos: Option<HashMap<String, String>> = self
            .call("purge", |mut conn| async move {
                redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
            })
            .await;
        let Some(infos) = infos else {
            return false;
        };
        // `slave0:ip=...,port=...,state=online,...`: a replica still in its first sync holds nothing to serve.
        let unreplicated = infos.values().any(|info| {
            !info
                .lines()
                .any(|l| l.starts_with("slave") && l.contains("state=online"))
        });
        if !unreplicated {
            self.errors.inc();
            tracing::warn!("a cache purge reached no replica in time; treating it as undelivered");
        }
        unreplicated
    }

    /// Records undelivered purges where every instance sees them, trying for up to `patience` (a cluster
    /// client that lost a node may stall every call while it learns the new layout). Returns whether that
    /// worked; if not, other instances may serve what the tags hold until this instance delivers the purge.
    async fn record_pending(&self, tags: &[String], patience: Duration) -> bool {
        let started = std::time::Instant::now();
        loop {
            let pending = self.meta.pending.as_str();
            let deadline = unix_now() + PENDING_SECS;
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(pending);
            for tag in tags {
                cmd.arg(deadline).arg(tag);
            }
            let recorded: Option<u64> = self
                .call("purge", |mut conn| async move {
                    cmd.query_async(&mut conn).await
                })
                .await;
            if recorded.is_some() {
                tracing::warn!(
                    tags = tags.len(),
                    "cache purge not delivered everywhere; every instance bypasses Redis until it is"
                );
                return true;
            }
            if started.elapsed() >= patience {
                tracing::error!(
                    tags = tags.len(),
                    "cache purge neither delivered nor recorded; other instances may serve what it drops \
                     until this instance delivers it"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Delivers this instance's undelivered purges. Returns whether none is left.
    async fn flush_pending(&self) -> bool {
        let tags: Vec<String> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        if tags.is_empty() {
            return true;
        }
        let (_, failed) = self.purge_now(&tags).await;
        // What is still undelivered but now recorded for everyone no longer needs this instance's own list.
        let recorded = !failed.is_empty() && self.record_pending(&failed, Duration::ZERO).await;
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for tag in &tags {
            if recorded || !failed.contains(tag) {
                pending.remove(tag);
            }
        }
        if failed.is_empty() {
            tracing::info!(tags = tags.len(), "delivered cache purges that had failed");
        }
        pending.is_empty()
    }

    /// Delivers the purges any instance recorded as undelivered, and forgets those delivered.
    async fn flush_recorded(&self) {
        let pending = self.meta.pending.as_str();
        let now = unix_now();
        // Not counted as an error: a Redis that is down is counted by the requests that need it.
        let recorded: Option<Vec<(String, f64)>> = self
            .redis
            .call(|mut conn| async move {
                redis::cmd("ZRANGE")
                    .arg(pending)
                    .arg(now)
                    .arg("+inf")
                    .arg("BYSCORE")
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
            })
            .await
            .ok();
        let Some(recorded) = recorded.filter(|r| !r.is_empty()) else {
            return;
        };
        let tags: Vec<String> = recorded.iter().map(|(tag, _)| tag.clone()).collect();
        let (_, failed) = self.purge_now(&tags).await;
        let mut invocation = self.scripts.delivered.key(&self.meta.pending);
        invocation.arg(now);
        for (tag, score) in recorded.iter().filter(|(t, _)| !failed.contains(t)) {
            invocation.arg(tag).arg(*score);
        }
        let forgotten: Option<i64> = self
            .call("purge", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await;
        if forgotten.is_some() && failed.is_empty() {
            tracing::info!(
                tags = tags.len(),
                "delivered cache purges recorded as undelivered"
            );
        }
    }
}

/// Retries undelivered purges in the background, this instance's own and those recorded by any instance, so
/// the cache comes back soon after Redis does even if nobody sends a request (or the instance that failed to
/// deliver a purge is gone).
///
/// It also keeps the purge counter and the epoch from expiring while the cache is in use (lookups only read
/// them): an expired epoch would turn every entry away.
async fn deliver_pending(cache: Weak<RedisCache>) {
    const TICK: Duration = Duration::from_millis(250);
    let refresh_every = (META_TTL_SECS * 1000 / 4 / TICK.as_millis() as u64).max(1);
    for tick in 0u64.. {
        tokio::time::sleep(TICK).await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        if cache.has_pending() {
            cache.flush_pending().await;
        }
        cache.flush_recorded().await;
        if tick % refresh_every == 0 {
            cache.begin().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Tag;

    fn entry() -> Entry {
        Entry {
            body: bytes::Bytes::from_static(br#"{"data":{"post":null}}"#),
            etag: "\"abc\"".into(),
            max_age: 60,
            public: true,
            stored_at: 1_700_000_000,
        }
    }

    #[test]
    fn a_stored_entry_keeps_its_start_epoch_and_tags() {
        let tags = [Tag::Post(7), Tag::UserPosts(3)];
        let raw = Stored::encode(42, "epoch-1", &tags, &entry()).expect("encodes");
        let shared = bytes::Bytes::from(raw.clone());
        let stored = Stored::decode(&shared).expect("decodes");
        assert_eq!((stored.start, stored.epoch), (42, "epoch-1"));
        assert_eq!(
            stored.tags().collect::<Vec<_>>(),
            ["Post:7", "User:3:posts"]
        );
        let back = Entry::decode(&shared.slice_ref(stored.entry)).expect("the entry");
        assert_eq!(back.body, entry().body);
        // A tag whose length runs past the tags: not served.
        let mut bad = raw.clone();
        bad[1 + 8 + 1 + "epoch-1".len() + 4] = 0xff;
        assert!(Stored::decode(&bad).is_none());
        // Cut short, or written by another version: not served.
        assert!(Stored::decode(&raw[..20]).is_none());
        assert!(Stored::decode(&entry().encode()).is_none());
        // An epoch too long to write whole is not stored (cut, it would never match the data set's).
        assert!(Stored::encode(1, &"e".repeat(256), &tags, &entry()).is_none());
    }

    #[test]
    fn an_entry_is_fresh_unless_one_of_its_tags_was_purged_after_it_started() {
        let mut purged = Purged::default();
        assert_eq!(purged.since(), "-inf", "a new copy reads every purge");
        let read = vec![("Post:7".to_owned(), 100.0), ("User:3".to_owned(), 90.0)];
        assert!(purged.absorb("e1", 120, "-inf", read));
        assert_eq!(purged.since(), "(120");
        assert!(
            purged.fresh(100, ["Post:7"].into_iter()),
            "purged when it started"
        );
        assert!(!purged.fresh(99, ["Post:7", "Comment:1"].into_iter()));
        assert!(purged.fresh(50, ["Comment:1"].into_iter()), "other tags");
        assert!(purged.fresh(100, ["User:3", "Post:7"].into_iter()));
        // A later purge of the same tag raises its number; an older report never lowers it.
        assert!(purged.absorb("e1", 130, "(120", vec![("Post:7".to_owned(), 125.0)]));
        assert!(!purged.fresh(120, ["Post:7"].into_iter()));
        assert!(purged.absorb("e1", 130, "(120", vec![("Post:7".to_owned(), 110.0)]));
        assert!(!purged.fresh(120, ["Post:7"].into_iter()));
        // The data set changed: what was read since the old number may lack purges, so nothing is served and
        // the next lookup reads them all.
        assert!(!purged.absorb("e2", 5, "(130", Vec::new()));
        assert_eq!(purged.since(), "-inf");
        assert!(purged.absorb("e2", 5, "-inf", vec![("Post:7".to_owned(), 4.0)]));
        assert!(!purged.fresh(3, ["Post:7"].into_iter()));
        assert!(purged.fresh(4, ["Post:7"].into_iter()));
    }
}
