//! The Redis backend, shared by every instance.
//!
//! Keys (under `FOLIO_CACHE_PREFIX`): `e:<hash>` entries, `t:<tag>` sets of the entry keys stored under a tag,
//! `g:<tag>` the sequence number of the tag's last purge, `seq` the purge counter, `epoch` a random id of this
//! Redis data set. Everything has a TTL: entries their lifetime, tag sets the longest lifetime, `g:` keys an hour.
//!
//! Storing and purging are Lua scripts, so each is atomic: a store checks that none of its tags was purged since
//! the execution began *and* writes, with no purge in between; a purge bumps its tags and deletes exactly the
//! entries indexed under them (never a SCAN). Every call has a short timeout. On any failure the request is
//! answered from the database; a purge that could not be delivered is kept, retried in the background, and until
//! it is delivered this instance serves nothing from Redis.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus::IntCounter;
use redis::aio::ConnectionManager;

use super::{CacheConfig, Entry, Key, Lookup, MAX_TTL, Snapshot};
use crate::error::AppError;
use crate::redis_conn::RedisConn;

/// How long a tag's purge sequence number is remembered: far longer than any execution may run.
const GEN_TTL_SECS: u64 = 3600;
/// Lifetime of the purge counter and the epoch, refreshed by every use; they always expire together.
const META_TTL_SECS: u64 = 24 * 3600;

// KEYS: seq, epoch. ARGV: a fresh epoch (used if there is none), ttl. `seq` and `epoch` always expire together.
const BEGIN: &str = r"
redis.call('SET', KEYS[2], ARGV[1], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[2])}
";

// KEYS: entry, epoch, seq, g:<tag> x n, t:<tag> x n. ARGV: start seq, epoch, ttl, value, n, tag-set ttl.
// Returns {1, seq now} when stored (the entry is fresh as of that seq), {0, '0'} when refused.
const STORE: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {0, '0'} end
local n = tonumber(ARGV[5])
local start = tonumber(ARGV[1])
for i = 1, n do
  local g = redis.call('GET', KEYS[3 + i])
  if g and tonumber(g) > start then return {0, '0'} end
end
redis.call('SET', KEYS[1], ARGV[4], 'EX', ARGV[3])
for i = 1, n do
  local set = KEYS[3 + n + i]
  redis.call('SADD', set, KEYS[1])
  redis.call('EXPIRE', set, ARGV[6])
end
return {1, redis.call('GET', KEYS[3]) or '0'}
";

// KEYS: seq, epoch, g:<tag> x n, t:<tag> x n. ARGV: n, gen ttl, fresh epoch, meta ttl. Returns how many entries
// were deleted.
const PURGE: &str = r"
local n = tonumber(ARGV[1])
local s = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[3], 'NX')
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local dropped = 0
for i = 1, n do
  redis.call('SET', KEYS[2 + i], s, 'EX', ARGV[2])
  local set = KEYS[2 + n + i]
  local members = redis.call('SMEMBERS', set)
  for _, k in ipairs(members) do
    dropped = dropped + redis.call('DEL', k)
  end
  redis.call('DEL', set)
end
return dropped
";

pub struct RedisCache {
    redis: Arc<RedisConn>,
    prefix: String,
    /// Tags whose purge could not be delivered yet.
    pending: Mutex<HashSet<String>>,
    begin: redis::Script,
    store: redis::Script,
    purge: redis::Script,
    errors: IntCounter,
}

impl RedisCache {
    /// The cache on `redis`. An unreachable Redis is not fatal: the service answers from the database until
    /// Redis can be reached.
    pub fn new(redis: Arc<RedisConn>, config: &CacheConfig, errors: IntCounter) -> Arc<Self> {
        let cache = Arc::new(Self {
            redis,
            prefix: config.prefix.clone(),
            pending: Mutex::new(HashSet::new()),
            begin: redis::Script::new(BEGIN),
            store: redis::Script::new(STORE),
            purge: redis::Script::new(PURGE),
            errors,
        });
        tokio::spawn(deliver_pending(Arc::downgrade(&cache)));
        cache
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    fn meta(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs one Redis call, counting and logging failures.
    async fn call<T, F>(
        &self,
        what: &'static str,
        f: impl FnOnce(ConnectionManager) -> F,
    ) -> Option<T>
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

    pub async fn get(&self, keys: &[Key]) -> Lookup {
        if self.has_pending() && !self.flush_pending().await {
            return Lookup::Bypass;
        }
        let names: Vec<String> = keys.iter().map(|k| self.key("e", &k.hex())).collect();
        let found: Option<Vec<Option<Vec<u8>>>> = self
            .call("get", |mut conn| async move {
                redis::cmd("MGET").arg(&names).query_async(&mut conn).await
            })
            .await;
        match found {
            None => Lookup::Bypass,
            Some(values) => values
                .into_iter()
                .flatten()
                .find_map(|raw| Entry::decode(&raw))
                .into(),
        }
    }

    pub async fn begin(&self) -> Option<Snapshot> {
        if self.has_pending() {
            return None;
        }
        let (seq_key, epoch_key) = (self.meta("seq"), self.meta("epoch"));
        let fresh_epoch = uuid::Uuid::new_v4().simple().to_string();
        let script = &self.begin;
        let (seq, epoch): (String, String) = self
            .call("begin", |mut conn| async move {
                script
                    .key(seq_key)
                    .key(epoch_key)
                    .arg(fresh_epoch)
                    .arg(META_TTL_SECS)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Some(Snapshot {
            seq: seq.parse().ok()?,
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
        let ttl = u64::from(entry.max_age).min(MAX_TTL.as_secs());
        let mut invocation = self.store.key(self.key("e", &key.hex()));
        invocation.key(self.meta("epoch"));
        invocation.key(self.meta("seq"));
        for tag in &tags {
            invocation.key(self.key("g", tag));
        }
        for tag in &tags {
            invocation.key(self.key("t", tag));
        }
        invocation
            .arg(snapshot.seq)
            .arg(epoch)
            .arg(ttl)
            .arg(entry.encode())
            .arg(tags.len())
            .arg(MAX_TTL.as_secs() + 60);
        let stored: Option<(i64, String)> = self
            .call("store", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await;
        match stored {
            Some((1, seq)) => Some(Snapshot {
                seq: seq.parse().ok()?,
                epoch: snapshot.epoch.clone(),
            }),
            _ => None,
        }
    }

    pub async fn purge(&self, tags: &[String]) -> Result<u64, AppError> {
        match self.purge_now(tags).await {
            Some(dropped) => Ok(dropped),
            None => {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(tags.iter().cloned());
                Err(AppError::Unavailable(
                    "The cache could not be purged now; the purge will be retried.".into(),
                ))
            }
        }
    }

    async fn purge_now(&self, tags: &[String]) -> Option<u64> {
        let mut invocation = self.purge.key(self.meta("seq"));
        invocation.key(self.meta("epoch"));
        for tag in tags {
            invocation.key(self.key("g", tag));
        }
        for tag in tags {
            invocation.key(self.key("t", tag));
        }
        invocation
            .arg(tags.len())
            .arg(GEN_TTL_SECS)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(META_TTL_SECS);
        let dropped: Option<u64> = self
            .call("purge", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await;
        dropped
    }

    /// Delivers purges that failed earlier. Returns whether none is left.
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
        if self.purge_now(&tags).await.is_none() {
            return false;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for tag in &tags {
            pending.remove(tag);
        }
        tracing::info!(tags = tags.len(), "delivered cache purges that had failed");
        pending.is_empty()
    }
}

/// Retries undelivered purges in the background, so other instances see them soon after Redis is back even if
/// this one gets no request.
async fn deliver_pending(cache: Weak<RedisCache>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        if cache.has_pending() {
            cache.flush_pending().await;
        }
    }
}
