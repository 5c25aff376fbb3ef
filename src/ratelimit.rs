//! Rate limiting: a token bucket per caller (GCRA, the "generic cell rate algorithm": one timestamp per key).
//!
//! Keys are `user:<id>` for signed-in callers and `ip:<address>` for anonymous ones, plus `login:email:<e>` and
//! `login:ip:<a>` for password attempts. With Redis the buckets are shared by every instance (a Lua script, on
//! Redis's clock); without it they live in this process. If Redis cannot be reached the limiter fails open: an
//! outage of the cache must not take the API down with it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use prometheus::IntCounter;

use crate::redis_conn::RedisConn;

/// A bucket: `burst` requests at once, refilled at one per `interval`.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub interval: Duration,
    pub burst: u32,
}

impl Rate {
    /// `per_min` requests a minute with bursts of `burst`; `None` when `per_min` is 0 (off).
    pub fn per_minute(per_min: u32, burst: u32) -> Option<Self> {
        (per_min > 0).then(|| Self {
            interval: Duration::from_secs(60) / per_min,
            burst: burst.max(1),
        })
    }

    fn tolerance(self) -> Duration {
        self.interval * self.burst
    }
}

/// The verdict for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Over the limit; retry after this long.
    Limited(Duration),
}

// KEYS: bucket. ARGV: interval ms, tolerance ms. Returns {allowed, retry-after ms}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + interval
if new - now > tolerance then return {0, new - now - tolerance} end
redis.call('SET', KEYS[1], new, 'PX', math.max(1, new - now))
return {1, 0}
";

pub struct RateLimiter {
    /// Each key's theoretical arrival time, in ms since `epoch`.
    local: moka::sync::Cache<String, u64>,
    epoch: Instant,
    redis: Option<(Arc<RedisConn>, redis::Script, String)>,
    errors: IntCounter,
}

impl RateLimiter {
    /// In-process buckets, or shared ones in Redis under `prefix`.
    pub fn new(redis: Option<Arc<RedisConn>>, prefix: &str, errors: IntCounter) -> Self {
        Self {
            local: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            epoch: Instant::now(),
            redis: redis.map(|r| (r, redis::Script::new(GCRA), format!("{prefix}rl:"))),
            errors,
        }
    }

    /// Takes one request from `key`'s bucket.
    pub async fn check(&self, key: &str, rate: Rate) -> Decision {
        match &self.redis {
            Some((conn, script, prefix)) => {
                let name = format!("{prefix}{key}");
                let interval = rate.interval.as_millis() as u64;
                let tolerance = rate.tolerance().as_millis() as u64;
                let result: Result<(i64, i64), String> = conn
                    .call(|mut c| async move {
                        script
                            .key(name)
                            .arg(interval)
                            .arg(tolerance)
                            .invoke_async(&mut c)
                            .await
                    })
                    .await;
                match result {
                    Ok((1, _)) => Decision::Allowed,
                    Ok((_, wait)) => Decision::Limited(Duration::from_millis(wait.max(1) as u64)),
                    Err(error) => {
                        self.errors.inc();
                        tracing::warn!(%error, "rate limiter cannot reach Redis; allowing the request");
                        Decision::Allowed
                    }
                }
            }
            None => self.check_local(key, rate),
        }
    }

    fn check_local(&self, key: &str, rate: Rate) -> Decision {
        let now = self.epoch.elapsed().as_millis() as u64;
        let interval = rate.interval.as_millis() as u64;
        let tolerance = rate.tolerance().as_millis() as u64;
        let mut decision = Decision::Allowed;
        self.local.entry(key.to_owned()).and_compute_with(|entry| {
            let tat = entry.map_or(now, |e| (*e.value()).max(now));
            let new = tat + interval;
            if new - now > tolerance {
                decision = Decision::Limited(Duration::from_millis(new - now - tolerance));
                Op::Nop
            } else {
                Op::Put(new)
            }
        });
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_is_allowed_then_the_rate_applies() {
        let limiter = RateLimiter::new(None, "", IntCounter::new("e", "e").unwrap());
        let rate = Rate::per_minute(60, 3).unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check("k", rate).await, Decision::Allowed);
        }
        match limiter.check("k", rate).await {
            Decision::Limited(wait) => assert!(wait <= Duration::from_secs(1), "{wait:?}"),
            Decision::Allowed => panic!("the fourth request within a second must wait"),
        }
        // Other keys have their own bucket.
        assert_eq!(limiter.check("other", rate).await, Decision::Allowed);
        assert!(Rate::per_minute(0, 10).is_none());
    }
}
