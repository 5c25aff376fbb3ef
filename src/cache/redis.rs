//! The Redis backend, shared by every instance, on a single server or a Redis Cluster (one protocol for both).
//!
//! Keys (under `FOLIO_CACHE_PREFIX`), laid out so that every atomic step touches one cluster slot:
//! - `{m}seq`, `{m}epoch`, `{m}pending`: the purge counter, a random id of the data set, and purges not yet
//!   delivered everywhere (a sorted set of tags by deadline). The `{m}` hash tag keeps them in one slot.
//! - `{t:<tag>}g`, `{t:<tag>}s`, `{t:<tag>}x`: the sequence number of the tag's last purge, the set of entry keys
//!   stored under it, and those a purge took but has not tombstoned yet. One hash tag per tag, so a tag's keys
//!   share a slot and different tags spread over the cluster.
//! - `e:<hash>`: an entry (or, after a purge, a tombstone `\0<seq>` that refuses older stores), in its own slot.
//!
//! Freshness (a result read before a purge is never stored after it, nor served after the purge returned), with
//! one response's tags in different slots:
//! - **begin**: read `seq` (the execution's start).
//! - **store**: for each tag, atomically in its slot: refuse if the tag was purged after the start, else add the
//!   entry key to its set. Only if every tag agreed, write the entry, atomically in its slot: refuse if it is a
//!   tombstone newer than the start.
//! - **purge**: take a new `seq`; for each tag, atomically in its slot: record `seq` and move its set into its
//!   to-drop set; then tombstone every entry there, and only then remove them from it (a purge whose reply was
//!   lost to a timeout, yet ran, leaves its entries for the next purge of the tag to find). A store racing with the purge either finds the tag's new number
//!   (refused), or was in the set the purge took, so its entry is tombstoned, before or after it is written
//!   (the tombstone refuses the write).
//! - **replicated** (cluster): Redis replicates asynchronously, so a purge is delivered only once `WAIT` says
//!   every master that has a replica passed it on; otherwise a master that crashed right after acknowledging it
//!   could be replaced by a replica without it.
//! - **undelivered**: a purge that could not reach every slot it needs (a node failing over), or not reach
//!   their replicas, is recorded in
//!   `{m}pending` before the mutation answers; while anything is pending no instance serves or stores a
//!   response, and every instance retries the pending purges until one delivers them.
//!
//! - **lookups** (single server): one call at a time; requests that ask meanwhile are answered by the next one.
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

use super::{CacheConfig, Entry, Key, Lookup, MAX_TTL, Snapshot, unix_now};
use crate::error::AppError;
use crate::redis_conn::{Conn, RedisConn};

/// How long a tag's purge number and an entry's tombstone are remembered: far longer than any execution runs.
const GEN_TTL_SECS: u64 = 3600;
/// Lifetime of the purge counter and the epoch, refreshed by every use; they always expire together.
const META_TTL_SECS: u64 = 24 * 3600;
/// How long an undelivered purge keeps the cache off: past it, every entry it could have missed has expired.
const PENDING_SECS: u64 = MAX_TTL.as_secs() + 60;
/// How long a mutation keeps trying to record an undelivered purge before it answers.
const RECORD_FOR: Duration = Duration::from_secs(3);

// Starts the purge counter, if it is missing, at Redis's clock in microseconds: a counter that was lost (a
// node's data) never restarts below the purge numbers other slots still hold, so their tags do not refuse every
// store for a long time.
const INIT_SEQ: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], t[1] .. string.format('%06d', tonumber(t[2])))
end
";

// KEYS: seq, epoch, pending. ARGV: a fresh epoch (used if there is none), meta ttl, now (s).
// Returns {seq, epoch, number of undelivered purges}.
const BEGIN: &str = r"
redis.call('SET', KEYS[2], ARGV[1], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), redis.call('ZCOUNT', KEYS[3], ARGV[3], '+inf')}
";

// KEYS: seq, epoch. ARGV: a fresh epoch, meta ttl. Returns the purge's sequence number.
const NEXT: &str = r"
local s = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return s
";

// KEYS: {t:<tag>}g, {t:<tag>}s. ARGV: start seq, entry key, set ttl. Returns 1 when the entry may be stored.
const TAG_STORE: &str = r"
local g = redis.call('GET', KEYS[1])
if g and tonumber(g) > tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
";

// KEYS: entry. ARGV: start seq, value, ttl. Returns 1 when stored. (On a cluster, whose nodes can lose their
// data one by one, the epoch says nothing about the entry's slot: the tags' purge numbers guard instead.)
const ENTRY_STORE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.byte(cur, 1) == 0 and tonumber(string.sub(cur, 2)) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

// A single server's store in one step (every key on one node), with the same checks as TAG_STORE for each
// tag and then ENTRY_STORE: a response carries dozens of tags, and one script per tag cost Redis more CPU than
// the lookup a miss had made. KEYS: entry, epoch, then {t:<tag>}g, {t:<tag>}s per tag. ARGV: start seq, value,
// ttl, epoch, entry key, set ttl. Returns 1 when stored.
const STORE_ALL: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[4] then return 0 end
local start = tonumber(ARGV[1])
for i = 3, #KEYS, 2 do
  local g = redis.call('GET', KEYS[i])
  if g and tonumber(g) > start then return 0 end
end
local cur = redis.call('GET', KEYS[1])
if cur and string.byte(cur, 1) == 0 and tonumber(string.sub(cur, 2)) > start then return 0 end
for i = 4, #KEYS, 2 do
  redis.call('SADD', KEYS[i], ARGV[5])
  redis.call('EXPIRE', KEYS[i], ARGV[6])
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

// KEYS: {t:<tag>}g, {t:<tag>}s, {t:<tag>}x. ARGV: seq, gen ttl. Records the purge and moves the tag's entries to
// its to-drop set `x`; returns that whole set. Entries leave `x` only once their tombstones are written
// (UNTOMBED), so a purge whose reply was lost (a timeout; the command may still run later) loses nothing: the
// next purge of the tag finds them in `x`.
const TAG_PURGE: &str = r"
local g = redis.call('GET', KEYS[1])
if g and tonumber(g) >= tonumber(ARGV[1]) then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SUNIONSTORE', KEYS[3], KEYS[3], KEYS[2])
  redis.call('DEL', KEYS[2])
end
redis.call('EXPIRE', KEYS[3], ARGV[2])
return redis.call('SMEMBERS', KEYS[3])
";

// KEYS: entry. ARGV: seq, ttl. Replaces the entry by a tombstone (never by an older one). Returns 1 if an entry
// was dropped.
const TOMB: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.byte(cur, 1) == 0 and tonumber(string.sub(cur, 2)) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], '\0' .. ARGV[1], 'EX', ARGV[2])
if cur and string.byte(cur, 1) ~= 0 then return 1 end
return 0
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

struct Scripts {
    begin: redis::Script,
    next: redis::Script,
    tag_store: redis::Script,
    entry_store: redis::Script,
    store_all: redis::Script,
    tag_purge: redis::Script,
    tomb: redis::Script,
    delivered: redis::Script,
}

pub struct RedisCache {
    redis: Arc<RedisConn>,
    prefix: String,
    /// Tags whose purge could not be delivered yet, nor recorded in `{m}pending`.
    pending: Mutex<HashSet<String>>,
    scripts: Scripts,
    errors: IntCounter,
    /// Lookups waiting for the one running (single server).
    lookups: Mutex<Lookups>,
    lookup_calls: IntCounter,
}

/// `begin`'s answer: the sequence number, the epoch, and how many purges are undelivered.
type Begun = (u64, String, u64);

/// One request's lookup, queued: the entry keys to try in order, and where its answer goes.
struct Asked {
    keys: Vec<String>,
    answer: oneshot::Sender<Lookup>,
}

/// Lookups are one Redis call at a time: requests asking while one runs wait, and the next call answers all of
/// them. Under load a call answers several requests, and each request's share of a round trip (system calls and
/// wake-ups on both sides, Redis's per-call work) is what a lookup cost: with the store disabled, one lookup per
/// request took a fifth of `detail`'s throughput on two cores. A quiet service never waits.
#[derive(Default)]
struct Lookups {
    running: bool,
    queue: Vec<Asked>,
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
                next: redis::Script::new(&format!("{INIT_SEQ}{NEXT}")),
                tag_store: redis::Script::new(TAG_STORE),
                entry_store: redis::Script::new(ENTRY_STORE),
                store_all: redis::Script::new(STORE_ALL),
                tag_purge: redis::Script::new(TAG_PURGE),
                tomb: redis::Script::new(TOMB),
                delivered: redis::Script::new(DELIVERED),
            },
            errors,
            lookups: Mutex::new(Lookups::default()),
            lookup_calls,
        });
        tokio::spawn(deliver_pending(Arc::downgrade(&cache)));
        cache
    }

    fn entry_key(&self, key: &Key) -> String {
        format!("{}e:{}", self.prefix, key.hex())
    }

    /// A tag's purge number, its entries, and its entries still to be tombstoned (one slot).
    fn tag_keys(&self, tag: &str) -> [String; 3] {
        ["g", "s", "x"].map(|k| format!("{}{{t:{tag}}}{k}", self.prefix))
    }

    fn meta(&self, name: &str) -> String {
        format!("{}{{m}}{name}", self.prefix)
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

    pub async fn get(self: &Arc<Self>, keys: &[Key]) -> Lookup {
        if self.has_pending() && !self.flush_pending().await {
            return Lookup::Bypass;
        }
        if !self.redis.is_cluster() {
            let (answer, answered) = oneshot::channel();
            let asked = Asked {
                keys: keys.iter().map(|key| self.entry_key(key)).collect(),
                answer,
            };
            let start = {
                let mut lookups = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
                lookups.queue.push(asked);
                !std::mem::replace(&mut lookups.running, true)
            };
            if start {
                // On a task of its own: a request that goes away must not strand the others' answers.
                let cache = Arc::clone(self);
                tokio::spawn(async move { cache.run_lookups().await });
            }
            return answered.await.unwrap_or(Lookup::Bypass);
        }
        let pending = self.meta("pending");
        let now = unix_now();
        // On a cluster the keys are in different slots: concurrent commands on the multiplexed connections.
        let stuck = self.call("get", |mut conn| async move {
            redis::cmd("ZCOUNT")
                .arg(pending)
                .arg(now)
                .arg("+inf")
                .query_async::<u64>(&mut conn)
                .await
        });
        let lookups = keys.iter().map(|key| {
            let name = self.entry_key(key);
            self.call("get", |mut conn| async move {
                redis::cmd("GET")
                    .arg(name)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
            })
        });
        let (stuck, found) = futures_util::join!(stuck, join_all(lookups));
        match stuck {
            Some(0) => {}
            Some(_) => return Lookup::Bypass,
            None => return Lookup::Bypass,
        }
        let mut values = Vec::with_capacity(found.len());
        for value in found {
            match value {
                Some(value) => values.push(value),
                None => return Lookup::Bypass,
            }
        }
        match values
            .into_iter()
            .flatten()
            .find_map(|raw| Entry::decode(&raw))
        {
            Some(entry) => Lookup::Hit(entry),
            None => Lookup::Miss(None),
        }
    }

    /// Answers the queued lookups, one call for all that queued during the previous one, until none is left
    /// (single server).
    async fn run_lookups(&self) {
        loop {
            let asked = {
                let mut lookups = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
                if lookups.queue.is_empty() {
                    lookups.running = false;
                    return;
                }
                std::mem::take(&mut lookups.queue)
            };
            // Not a script: Lua copies every value it reads and returns (a feed page is 4-8 KiB), which cost Redis
            // 10 µs per entry served. `begin`'s script (small answers) and an `MGET`, in one round trip and one
            // transaction: the snapshot is as of the entries read.
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("EVALSHA")
                .arg(self.scripts.begin.get_hash())
                .arg(3)
                .arg(self.meta("seq"))
                .arg(self.meta("epoch"))
                .arg(self.meta("pending"))
                .arg(uuid::Uuid::new_v4().simple().to_string())
                .arg(META_TTL_SECS)
                .arg(unix_now());
            let mget = pipe.cmd("MGET");
            for one in &asked {
                for key in &one.keys {
                    mget.arg(key);
                }
            }
            let script = &self.scripts.begin;
            self.lookup_calls.inc();
            let found: Option<(Begun, Vec<Option<Vec<u8>>>)> = self
                .call("get", |mut conn| async move {
                    match pipe.query_async(&mut conn).await {
                        // A Redis that restarted has forgotten the script: load it, once.
                        Err(err)
                            if err.kind()
                                == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                        {
                            script.prepare_invoke().load_async(&mut conn).await?;
                            pipe.query_async(&mut conn).await
                        }
                        other => other,
                    }
                })
                .await;
            let Some(((seq, epoch, stuck), found)) = found else {
                for one in asked {
                    let _ = one.answer.send(Lookup::Bypass);
                }
                continue;
            };
            let snapshot = (stuck == 0 && !self.has_pending()).then_some(Snapshot {
                seq,
                epoch: Some(epoch),
            });
            let mut found = found.into_iter();
            for one in asked {
                let values: Vec<Vec<u8>> = found.by_ref().take(one.keys.len()).flatten().collect();
                let lookup = if stuck != 0 {
                    Lookup::Bypass
                } else if let Some(entry) = values.iter().find_map(|raw| Entry::decode(raw)) {
                    Lookup::Hit(entry)
                } else {
                    Lookup::Miss(snapshot.clone())
                };
                let _ = one.answer.send(lookup);
            }
        }
    }

    pub async fn begin(&self) -> Option<Snapshot> {
        if self.has_pending() {
            return None;
        }
        let keys = [self.meta("seq"), self.meta("epoch"), self.meta("pending")];
        let fresh_epoch = uuid::Uuid::new_v4().simple().to_string();
        let script = &self.scripts.begin;
        let now = unix_now();
        let (seq, epoch, stuck): (u64, String, u64) = self
            .call("begin", |mut conn| async move {
                script
                    .key(&keys[..])
                    .arg(fresh_epoch)
                    .arg(META_TTL_SECS)
                    .arg(now)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        (stuck == 0).then_some(Snapshot {
            seq,
            epoch: Some(epoch),
        })
    }

    pub async fn store(
        &self,
        key: Key,
        entry: Entry,
        tags: Vec<String>,
        snapshot: &Snapshot,
    ) -> Option<Snapshot> {
        let epoch = snapshot.epoch.clone()?;
        let name = self.entry_key(&key);
        let start = snapshot.seq;
        let ttl = u64::from(entry.max_age).min(MAX_TTL.as_secs());
        if !self.redis.is_cluster() {
            let mut invocation = self.scripts.store_all.key(&name);
            invocation.key(self.meta("epoch"));
            for tag in &tags {
                let [g, s, _] = self.tag_keys(tag);
                invocation.key(g).key(s);
            }
            invocation
                .arg(start)
                .arg(entry.encode())
                .arg(ttl)
                .arg(epoch)
                .arg(&name)
                .arg(MAX_TTL.as_secs() + 60);
            let stored: Option<i64> = self
                .call("store", |mut conn| async move {
                    invocation.invoke_async(&mut conn).await
                })
                .await;
            return (stored == Some(1)).then(|| snapshot.clone());
        }
        // On a cluster, first every tag, each in its own slot, agrees and indexes the entry...
        let agreed = join_all(tags.iter().map(|tag| {
            let [g, s, _] = self.tag_keys(tag);
            let mut invocation = self.scripts.tag_store.key(g);
            invocation
                .key(s)
                .arg(start)
                .arg(&name)
                .arg(MAX_TTL.as_secs() + 60);
            self.call("store", |mut conn| async move {
                invocation.invoke_async::<i64>(&mut conn).await
            })
        }))
        .await;
        if !agreed.iter().all(|a| *a == Some(1)) {
            return None;
        }
        // ...then the entry is written, unless a purge has tombstoned it since.
        let mut invocation = self.scripts.entry_store.key(&name);
        invocation.arg(start).arg(entry.encode()).arg(ttl);
        let stored: Option<i64> = self
            .call("store", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await;
        (stored == Some(1)).then(|| snapshot.clone())
    }

    pub async fn purge(&self, tags: &[String]) -> Result<u64, AppError> {
        let (dropped, failed) = self.purge_now(tags).await;
        if failed.is_empty() {
            return Ok(dropped);
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

    /// Purges `tags`. Returns how many entries were dropped and the tags whose purge did not get through.
    async fn purge_now(&self, tags: &[String]) -> (u64, Vec<String>) {
        let keys = [self.meta("seq"), self.meta("epoch")];
        let fresh_epoch = uuid::Uuid::new_v4().simple().to_string();
        let script = &self.scripts.next;
        let seq: Option<u64> = self
            .call("purge", |mut conn| async move {
                script
                    .key(&keys[..])
                    .arg(fresh_epoch)
                    .arg(META_TTL_SECS)
                    .invoke_async(&mut conn)
                    .await
            })
            .await;
        let Some(seq) = seq else {
            return (0, tags.to_vec());
        };
        let taken = join_all(tags.iter().map(|tag| {
            let [g, s, x] = self.tag_keys(tag);
            let mut invocation = self.scripts.tag_purge.key(g);
            invocation.key(s).key(x).arg(seq).arg(GEN_TTL_SECS);
            self.call("purge", |mut conn| async move {
                invocation.invoke_async::<Vec<String>>(&mut conn).await
            })
        }))
        .await;
        let mut failed = Vec::new();
        // Entry key -> the tags that indexed it, so a failed tombstone fails its tags.
        let mut entries: HashMap<String, Vec<&String>> = HashMap::new();
        for (tag, members) in tags.iter().zip(taken) {
            match members {
                Some(members) => {
                    for member in members {
                        entries.entry(member).or_default().push(tag);
                    }
                }
                None => failed.push(tag.clone()),
            }
        }
        let tombs = join_all(entries.keys().map(|entry| {
            let mut invocation = self.scripts.tomb.key(entry);
            invocation.arg(seq).arg(GEN_TTL_SECS);
            self.call("purge", |mut conn| async move {
                invocation.invoke_async::<u64>(&mut conn).await
            })
        }))
        .await;
        let mut dropped = 0;
        let mut failed_by_tomb = HashSet::new();
        // Per tag: the entries tombstoned, which may leave its to-drop set.
        let mut tombed: HashMap<&String, Vec<&String>> = HashMap::new();
        for ((entry, owners), tomb) in entries.iter().zip(tombs) {
            match tomb {
                Some(n) => {
                    dropped += n;
                    for owner in owners {
                        tombed.entry(owner).or_default().push(entry);
                    }
                }
                None => failed_by_tomb.extend(owners.iter().map(|t| (*t).clone())),
            }
        }
        // Best effort: what stays in a to-drop set is tombstoned again by the tag's next purge, harmlessly.
        join_all(
            tombed
                .into_iter()
                .filter(|(tag, _)| !failed_by_tomb.contains(*tag))
                .map(|(tag, done)| {
                    let [_, _, x] = self.tag_keys(tag);
                    let mut cmd = redis::cmd("SREM");
                    cmd.arg(x).arg(done);
                    self.call("purge", |mut conn| async move {
                        cmd.query_async::<u64>(&mut conn).await
                    })
                }),
        )
        .await;
        failed.extend(failed_by_tomb);
        if failed.len() < tags.len() && !self.replicated().await {
            // Not on a replica yet: a failover now could promote one without this purge.
            return (dropped, tags.to_vec());
        }
        (dropped, failed)
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
            let pending = self.meta("pending");
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
        let pending = self.meta("pending");
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
        let mut invocation = self.scripts.delivered.key(self.meta("pending"));
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
async fn deliver_pending(cache: Weak<RedisCache>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        if cache.has_pending() {
            cache.flush_pending().await;
        }
        cache.flush_recorded().await;
    }
}
