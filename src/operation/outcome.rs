//! What running an operation produced, in terms any transport can frame: the serialised body, whether and how
//! it may be cached, how it reads as a whole (answered, refused before running, timed out, rate-limited), where
//! it came from, and the tags it read.

use crate::cache::{Entry, Tags, unix_now};
use crate::error::{Code, graphql_error_body};

/// The result of `Pipeline::run`.
#[derive(Debug)]
pub struct Outcome {
    /// The body (a GraphQL response), with its cache policy: `max_age`, `public`, `etag` (set only when
    /// `cacheable`) and when it was computed.
    pub entry: Entry,
    /// Whether clients and shared caches may keep it.
    pub cacheable: bool,
    pub status: Status,
    pub cache: CacheStatus,
    /// The cache tags the execution read (empty when the answer came from the cache or was not a query).
    pub tags: Tags,
}

/// How an outcome reads as a whole. Transports map it to their own status (HTTP: 200, 4xx, 429, 504, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Executed: data, perhaps with field errors.
    Ok,
    /// Refused before anything ran: unparsable, invalid, or over a limit. The body has no `data`.
    RequestError,
    /// The transport does not run this operation type (a mutation over `GET`).
    NotAllowed,
    /// A resolver refused with `RATE_LIMITED` (`login`): retry after this many seconds.
    RateLimited { retry_after: u64 },
    /// Execution ran past its deadline and was stopped (`TIMEOUT`).
    TimedOut,
    /// The service failed (masked `INTERNAL_SERVER_ERROR`).
    Internal,
}

/// Where the body came from (`X-Cache` over HTTP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

impl Outcome {
    pub(super) fn hit(entry: Entry) -> Self {
        Self {
            entry,
            cacheable: true,
            status: Status::Ok,
            cache: CacheStatus::Hit,
            tags: Tags::default(),
        }
    }

    /// An operation refused before it ran, with one error carrying `code`.
    pub(super) fn request_error(code: Code, message: &str) -> Self {
        Self::refused(Status::RequestError, code, message)
    }

    /// An operation over the cost limit: the error carries both figures in `extensions.cost`.
    pub(super) fn too_costly(estimated: u64, max: u64) -> Self {
        let body = serde_json::json!({ "errors": [{
            "message": format!(
                "The operation's estimated cost is {estimated}; at most {max} is allowed (FOLIO_MAX_COST)."
            ),
            "extensions": {
                "code": Code::CostLimitExceeded.as_str(),
                "cost": { "estimated": estimated, "max": max },
            },
        }]});
        Self {
            entry: Entry {
                body: body.to_string().into_bytes().into(),
                etag: String::new(),
                max_age: 0,
                public: false,
                stored_at: unix_now(),
            },
            cacheable: false,
            status: Status::RequestError,
            cache: CacheStatus::Bypass,
            tags: Tags::default(),
        }
    }

    /// An executed body outside the cache (a subscription's or live query's result).
    pub(super) fn of_body(body: bytes::Bytes, status: Status) -> Self {
        Self {
            entry: Entry {
                body,
                etag: String::new(),
                max_age: 0,
                public: false,
                stored_at: unix_now(),
            },
            cacheable: false,
            status,
            cache: CacheStatus::Bypass,
            tags: Tags::default(),
        }
    }

    pub(super) fn not_allowed() -> Self {
        Self::refused(
            Status::NotAllowed,
            Code::MethodNotAllowed,
            "Mutations and subscriptions are only accepted over POST.",
        )
    }

    fn refused(status: Status, code: Code, message: &str) -> Self {
        Self {
            entry: error_entry(code, message),
            cacheable: false,
            status,
            cache: CacheStatus::Bypass,
            tags: Tags::default(),
        }
    }
}

/// An uncacheable entry holding one error.
pub(super) fn error_entry(code: Code, message: &str) -> Entry {
    Entry {
        body: graphql_error_body(code, message).into(),
        etag: String::new(),
        max_age: 0,
        public: false,
        stored_at: unix_now(),
    }
}
