//! The store: every SQL statement Folio runs lives under this module.
//!
//! One `Store` fronts either a SQLite pool (the embedded default) or a PostgreSQL pool (production). Where the
//! dialects agree the SQL text is shared (both accept `$1` placeholders); where they differ (id lists, search,
//! bulk inserts) both versions sit next to each other in the domain file. The store knows nothing of GraphQL
//! or HTTP: it takes and returns plain rows.
//!
//! Every statement is counted in `folio_db_statements_total`, which is how tests prove that a request's number
//! of statements depends on its shape and not on how many items it returns. Concurrent requests' id-list
//! statements are shared under load (`share`): fewer statements than requests, never an older read.

mod billing;
mod comments;
mod posts;
mod replication;
pub mod seed;
mod share;
mod users;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus::IntCounter;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use billing::{BillingAction, BillingEvent, EventOutcome, IgnoreReason, WebhookEventRow};
pub use comments::{CommentInPageRow, CommentOnPost, CommentRow, CreateComment};
pub use posts::{Content, Drafts, NewPost, PostChanges, PostListFilter, PostRow};
pub use replication::{Lsn, ReplicaStatus};
pub use users::{CreateAccount, ExternalUser, Plan, Role, UserRow};

use crate::config::{DatabaseKind, DatabaseOptions};
use crate::error::AppError;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The connection pool of whichever backend is configured.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool. For statements whose text is the same on both backends.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
        .map_err($crate::error::AppError::from)
    };
}
pub(crate) use with_pool;

/// Runs `$body` inside one transaction bound to `$tx`, committing when it finishes. A `?` inside the body returns
/// early and drops the transaction, which rolls it back: a mutation either happens whole or not at all.
///
/// SQLite transactions begin `IMMEDIATE` (taking the write lock up front), so a transaction that reads before it
/// writes cannot fail half-way on a stale snapshot; PostgreSQL ones run at READ COMMITTED and lock what they
/// must check with `FOR UPDATE`.
macro_rules! with_tx {
    ($store:expr, $tx:ident => $body:expr) => {
        match &$store.db {
            $crate::store::Db::Sqlite(pool) => {
                let mut $tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .map_err($crate::error::AppError::from)?;
                let out = $body;
                $tx.commit().await.map_err($crate::error::AppError::from)?;
                out
            }
            $crate::store::Db::Postgres(pool) => {
                let mut $tx = pool.begin().await.map_err($crate::error::AppError::from)?;
                let out = $body;
                $tx.commit().await.map_err($crate::error::AppError::from)?;
                out
            }
        }
    };
}
pub(crate) use with_tx;

/// Whether a write failed on a unique index (a taken email, an external id provisioned concurrently).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Builds the two versions of a statement that filters on a list of ids: `= ANY($1)` (a bound array) on
/// PostgreSQL, `IN (SELECT value FROM json_each($1))` (a bound JSON array) on SQLite. Either way the statement
/// text is fixed, so it is prepared once and reused whatever the number of ids.
macro_rules! id_list_sql {
    ($before:expr, $after:expr) => {
        $crate::store::IdListSql {
            postgres: concat!($before, " = ANY($1)", $after),
            sqlite: concat!($before, " IN (SELECT value FROM json_each($1))", $after),
        }
    };
}
pub(crate) use id_list_sql;

/// Reads a row's columns one after another, each by the name the statement gives it. For the rows a page of
/// posts decodes by the hundred: looking each column up by name hashes the name, which was a measurable share
/// of decoding them. So the reader goes by position and checks that the column there has the expected name: a
/// statement whose columns moved fails loudly on its first row instead of silently swapping two values.
pub(crate) struct Columns<'r, R> {
    row: &'r R,
    next: usize,
}

impl<'r, R: sqlx::Row> Columns<'r, R>
where
    usize: sqlx::ColumnIndex<R>,
{
    pub(crate) fn new(row: &'r R) -> Self {
        Self { row, next: 0 }
    }

    /// The next column, which must be called `name`.
    pub(crate) fn next<T>(&mut self, name: &str) -> Result<T, sqlx::Error>
    where
        T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        use sqlx::Column;
        let index = self.next;
        self.next += 1;
        match self.row.columns().get(index).map(|c| c.name()) {
            Some(found) if found == name => self.row.try_get(index),
            found => Err(sqlx::Error::ColumnDecode {
                index: index.to_string(),
                source: format!(
                    "expected the column `{name}` here, found `{}`",
                    found.unwrap_or("no column")
                )
                .into(),
            }),
        }
    }

    /// The next column, called `name`, its text converted by `FromStr` (the stored enums) without copying it.
    pub(crate) fn next_parsed<T>(&mut self, name: &str) -> Result<T, sqlx::Error>
    where
        &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        T: std::str::FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let index = self.next;
        let text: &'r str = self.next(name)?;
        text.parse().map_err(|e: T::Err| sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: Box::new(e),
        })
    }
}

/// `sqlx::FromRow` for both backends' rows from one body over `Columns` (see there): `$cols` names the reader.
macro_rules! from_columns {
    ($ty:ty, |$cols:ident| $body:expr) => {
        impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for $ty {
            fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
                let mut $cols = $crate::store::Columns::new(row);
                $body
            }
        }
        impl<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> for $ty {
            fn from_row(row: &'r sqlx::sqlite::SqliteRow) -> Result<Self, sqlx::Error> {
                let mut $cols = $crate::store::Columns::new(row);
                $body
            }
        }
    };
}
pub(crate) use from_columns;

/// A row type both backends can decode, as the store's statements shared between them return.
pub(crate) trait DecodeOnBoth:
    Send
    + Unpin
    + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
    + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
{
}

impl<T> DecodeOnBoth for T where
    T: Send
        + Unpin
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
{
}

/// A statement over an id list, in both dialects (see `id_list_sql!`).
pub(crate) struct IdListSql {
    pub postgres: &'static str,
    pub sqlite: &'static str,
}

/// Keyset pagination for one page: rows strictly beyond `after` (in the list's order), at most `limit` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Page {
    pub after: Option<i64>,
    pub limit: i64,
}

impl Page {
    /// How many of the page's rows are shown: a connection's page fetches one more than `first`, to learn
    /// whether another page follows.
    pub fn shown(self) -> usize {
        usize::try_from(self.limit - 1).unwrap_or(0)
    }
}

/// Handle to the database. Cheap to clone; all clones share one pool.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) db: Db,
    statements: IntCounter,
    /// Id-list statements shared by concurrent callers (see `share`).
    sharing: Arc<share::Sharing>,
}

impl Store {
    /// Opens the pool for `url` (creating the SQLite file if needed). Does not migrate.
    pub async fn connect(
        options: &DatabaseOptions,
        statements: IntCounter,
    ) -> anyhow::Result<Self> {
        let (url, max_connections, acquire_timeout) = (
            options.url.as_str(),
            options.max_connections,
            options.acquire_timeout,
        );
        let db = match crate::config::database_kind(url)? {
            DatabaseKind::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .context("DATABASE_URL is not a valid SQLite URL")?
                    .create_if_missing(true)
                    // WAL lets readers run while one writer commits; NORMAL sync is durable in WAL mode
                    // except for the last transactions on power loss, the usual trade for a service.
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(acquire_timeout)
                    .connect_with(options)
                    .await
                    .context("could not open the SQLite database")?;
                Db::Sqlite(pool)
            }
            DatabaseKind::Postgres => {
                let options = postgres_options(url, options.tls_from_env)?;
                let pool = pg_pool_options(max_connections, acquire_timeout)
                    .connect_with(options)
                    .await
                    .context("could not connect to PostgreSQL (DATABASE_URL)")?;
                Db::Postgres(pool)
            }
        };
        Ok(Self {
            db,
            statements,
            sharing: Arc::default(),
        })
    }

    /// Which backend this store talks to.
    pub fn kind(&self) -> DatabaseKind {
        match self.db {
            Db::Sqlite(_) => DatabaseKind::Sqlite,
            Db::Postgres(_) => DatabaseKind::Postgres,
        }
    }

    /// Applies pending migrations. Safe to run from several processes at once: PostgreSQL serialises them with
    /// an advisory lock; on SQLite a process that loses the race retries and then finds them applied.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match &self.db {
            Db::Postgres(pool) => POSTGRES_MIGRATOR
                .run(pool)
                .await
                .context("migrating PostgreSQL")?,
            Db::Sqlite(pool) => {
                let mut attempt = 0;
                loop {
                    match SQLITE_MIGRATOR.run(pool).await {
                        Ok(()) => break,
                        Err(err) if attempt < 5 => {
                            attempt += 1;
                            tracing::warn!(error = %err, attempt, "SQLite migration raced another process; retrying");
                            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        }
                        Err(err) => return Err(err).context("migrating SQLite"),
                    }
                }
            }
        }
        Ok(())
    }

    /// One cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), AppError> {
        self.count(1);
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// Closes the pool: in-flight statements finish, new ones fail at once. Used at shutdown.
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }

    /// Records that `n` statements are about to run.
    pub(crate) fn count(&self, n: u64) {
        self.statements.inc_by(n);
    }

    /// Runs an id-list statement (see `id_list_sql!`) with optional extra `i64` binds after the list; `key` is
    /// the id a row belongs to (of those in `ids`).
    pub(crate) async fn fetch_for_ids<T>(
        &self,
        sql: &IdListSql,
        ids: &[i64],
        extra: &[i64],
        key: fn(&T) -> i64,
    ) -> Result<Vec<T>, AppError>
    where
        T: DecodeOnBoth + Clone + Sync + 'static,
    {
        self.fetch_for_ids_in(sql.postgres, sql.sqlite, ids, extra, key)
            .await
    }

    /// `fetch_for_ids` with statement texts built at run time (only ever from fixed fragments and integers).
    /// Concurrent callers of the same statement share one when enough of it are running (see `share`).
    pub(crate) async fn fetch_for_ids_in<T>(
        &self,
        postgres: &str,
        sqlite: &str,
        ids: &[i64],
        extra: &[i64],
        key: fn(&T) -> i64,
    ) -> Result<Vec<T>, AppError>
    where
        T: DecodeOnBoth + Clone + Sync + 'static,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let statement = share::Statement::new::<T>(postgres, extra);
        self.sharing
            .rows(statement, ids, Some(key), |ids| {
                self.fetch_for_ids_now(postgres, sqlite, ids, extra)
            })
            .await
    }

    async fn fetch_for_ids_now<T>(
        &self,
        postgres: &str,
        sqlite: &str,
        ids: Vec<i64>,
        extra: &[i64],
    ) -> Result<Vec<T>, AppError>
    where
        T: DecodeOnBoth,
    {
        self.count(1);
        let rows = match &self.db {
            Db::Postgres(pool) => {
                let mut q = sqlx::query_as::<_, T>(AssertSqlSafe(postgres)).bind(ids);
                for v in extra {
                    q = q.bind(*v);
                }
                q.fetch_all(pool).await
            }
            Db::Sqlite(pool) => {
                let json = serde_json::Value::from(ids).to_string();
                let mut q = sqlx::query_as::<_, T>(AssertSqlSafe(sqlite)).bind(json);
                for v in extra {
                    q = q.bind(*v);
                }
                q.fetch_all(pool).await
            }
        };
        Ok(rows?)
    }
}

/// How long a pooled PostgreSQL connection may sit idle before it is pinged on its way out of the pool.
const PING_IF_IDLE: Duration = Duration::from_secs(1);

/// Pool options for PostgreSQL (the primary and the replicas).
///
/// sqlx pings every idle connection before handing it out (`test_before_acquire`): a round trip before every
/// statement, which under load was half of the round trips and of the kernel's send work (a `post(id)` page,
/// three statements, made six). Here only a connection idle for a while is pinged, where the server or the
/// network dropping it is plausible; one that was in use a moment ago is handed out as it is, and if it died
/// in that moment its statement fails like any database error (answered `SERVICE_UNAVAILABLE`; the fault drill
/// restarts PostgreSQL under load to check it).
pub(crate) fn pg_pool_options(max_connections: u32, acquire_timeout: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE {
                    use sqlx::Connection;
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// URL parameters that configure TLS (sqlx accepts both spellings of the mode).
const TLS_PARAMS: [&str; 5] = ["sslmode", "ssl-mode", "sslrootcert", "sslcert", "sslkey"];
/// Connection options for a PostgreSQL URL.
///
/// Without any TLS setting (an `sslmode`, a certificate or key, in the URL or the environment) the default is
/// libpq's `prefer`: TLS when the server offers
/// it, unverified, with a silent fall-back to plain text. For a server on this host (a loopback address or a
/// Unix socket) Folio connects in plain text instead: the traffic never leaves the machine, so encrypting it
/// protects nothing, and it cost about a tenth of an uncached request's CPU on both ends. Any explicit
/// TLS setting is honoured as given; for a remote server, set `sslmode=verify-full` to get TLS that is checked.
fn postgres_options(url: &str, tls_in_env: bool) -> anyhow::Result<PgConnectOptions> {
    let options =
        PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let explicit = tls_in_env
        || url.split_once('?').is_some_and(|(_, query)| {
            query.split('&').any(|kv| {
                let key = kv.split_once('=').map_or(kv, |(k, _)| k);
                TLS_PARAMS.iter().any(|p| key.eq_ignore_ascii_case(p))
            })
        });
    let host = options.get_host();
    let local = host.starts_with('/')
        || host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Ok(if local && !explicit {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    })
}

/// Escapes `%`, `_` and `\` so user text matches literally inside a `LIKE`/`ILIKE` pattern (escape char `\`).
pub(crate) fn like_pattern(term: &str) -> String {
    let mut out = String::with_capacity(term.len() + 2);
    out.push('%');
    for ch in term.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_servers_skip_tls_unless_asked() {
        use sqlx::postgres::PgSslMode::{Disable, Prefer, Require};
        let mode = |url: &str, env: bool| {
            let options = super::postgres_options(url, env).unwrap();
            format!("{:?}", options.get_ssl_mode())
        };
        for (url, env, expected) in [
            ("postgres://u@127.0.0.1:5432/db", false, Disable),
            ("postgres://u@localhost/db", false, Disable),
            ("postgres://u@[::1]:5432/db", false, Disable),
            ("postgres://u@127.0.0.1/db?sslmode=require", false, Require),
            ("postgres://u@127.0.0.1/db", true, Prefer),
            ("postgres://u@db.internal:5432/db", false, Prefer),
            (
                "postgres://u@10.0.0.5/db?application_name=x&sslmode=require",
                false,
                Require,
            ),
            ("postgres://u@127.0.0.1/db?ssl-mode=require", false, Require),
            (
                "postgres://u@127.0.0.1/db?sslrootcert=/etc/ca.pem",
                false,
                Prefer,
            ),
            (
                "postgres://u@localhost/db?host=/var/run/postgresql",
                false,
                Disable,
            ),
        ] {
            assert_eq!(
                mode(url, env),
                format!("{expected:?}"),
                "{url} (PGSSLMODE set: {env})"
            );
        }
    }

    #[test]
    fn like_pattern_escapes_wildcards() {
        assert_eq!(super::like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[tokio::test]
    async fn columns_are_read_by_name_and_a_moved_column_is_an_error() {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let row = sqlx::query("SELECT 1 AS id, 'x' AS title")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let mut cols = super::Columns::new(&row);
        assert_eq!(cols.next::<i64>("id").unwrap(), 1);
        assert_eq!(cols.next::<String>("title").unwrap(), "x");
        // The same row read as if its columns were the other way round.
        let mut cols = super::Columns::new(&row);
        let err = cols.next::<String>("title").unwrap_err();
        assert!(
            err.to_string().contains("expected the column `title`"),
            "{err}"
        );
        assert!(cols.next::<i64>("missing").is_err());
    }
}
