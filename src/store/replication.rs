//! The statements of streaming replication: where the primary's WAL is, how far a replica has replayed it and
//! how far behind it is. PostgreSQL only (SQLite has no replicas). Not counted in `folio_db_statements_total`,
//! which counts what requests read.

use std::time::Duration;

use anyhow::Context;

use super::{Db, Store, postgres_options};
use crate::config::DatabaseOptions;
use crate::error::AppError;

/// A position in the WAL (an LSN), as a number: PostgreSQL prints it as two hex halves, `16/B374D848`.
pub type Lsn = u64;

fn parse_lsn(text: &str) -> Option<Lsn> {
    let (high, low) = text.split_once('/')?;
    Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?)
}

/// How a replica stands.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaStatus {
    /// Up to where it has replayed the primary's WAL.
    pub replayed: Lsn,
    /// How long its replay is behind: zero when it has replayed all it received, otherwise the age of the last
    /// transaction it replayed.
    pub lag: Duration,
}

impl Store {
    /// A pool on a read replica. Lazy: a replica that is down at start is skipped until it answers.
    pub fn connect_replica(
        options: &DatabaseOptions,
        statements: prometheus::IntCounter,
    ) -> anyhow::Result<Self> {
        let connect = postgres_options(&options.url, options.tls_from_env)
            .context("DATABASE_REPLICA_URLS holds an invalid PostgreSQL URL")?;
        let pool = super::pg_pool_options(options.max_connections, options.acquire_timeout)
            .connect_lazy_with(connect);
        Ok(Self {
            db: Db::Postgres(pool),
            statements,
            sharing: Default::default(),
        })
    }

    /// The primary's current WAL position: after a transaction committed, at or past its commit record.
    pub async fn current_wal_lsn(&self) -> Result<Option<Lsn>, AppError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(None);
        };
        let text: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(pool)
            .await?;
        Ok(parse_lsn(&text))
    }

    /// Where this replica stands; `None` if it is not a replica (or not PostgreSQL).
    pub async fn replica_status(&self) -> Result<Option<ReplicaStatus>, AppError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(None);
        };
        let row: (Option<String>, f64) = sqlx::query_as(
            "SELECT pg_last_wal_replay_lsn()::text, \
                    CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 \
                         ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 3600) \
                    END::float8",
        )
        .fetch_one(pool)
        .await?;
        Ok(row
            .0
            .as_deref()
            .and_then(parse_lsn)
            .map(|replayed| ReplicaStatus {
                replayed,
                lag: Duration::from_secs_f64(row.1.max(0.0)),
            }))
    }

    /// Up to where this replica has replayed the primary's WAL.
    pub async fn replayed_lsn(&self) -> Result<Option<Lsn>, AppError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(None);
        };
        let text: Option<String> = sqlx::query_scalar("SELECT pg_last_wal_replay_lsn()::text")
            .fetch_one(pool)
            .await?;
        Ok(text.as_deref().and_then(parse_lsn))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_lsn;

    #[test]
    fn lsns_read_as_numbers_in_wal_order() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert!(parse_lsn("16/B374D848") > parse_lsn("15/FFFFFFFF"));
        assert_eq!(parse_lsn("garbage"), None);
    }
}
