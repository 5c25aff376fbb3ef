//! The error vocabulary: `Code`, every machine-readable code a client can see, and `AppError`, the one error
//! type of the service, each variant with its code.
//!
//! GraphQL routes answer errors as `{"errors": [{"message", "extensions": {"code", ...}}]}` (see
//! `graphql_error_body`); plain HTTP routes (`/api/cache/purge`, `/api/webhooks/stripe`) as
//! `{"error": {"code", "message"}}` (`AppError`'s `IntoResponse`, `plain_error_body`). Internal errors are
//! logged with their full cause inside the request's span (which carries the request id) and returned masked.
//!
//! `AppError` deliberately does not implement `Display`: async-graphql converts any `Display` type into an
//! error *without* extensions, so a `Display` impl would let `?` silently drop the code. Without it, `?` in a
//! resolver goes through our `From<AppError> for async_graphql::Error`, which always sets the code.

use std::collections::BTreeMap;

use async_graphql::ErrorExtensions;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Every error code Folio answers with, in GraphQL `extensions.code` or a plain route's `error.code`. Clients
/// switch on these strings: they never change meaning. `Code::iter()` lists them all (for docs and tests).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumString,
)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    // Resolver outcomes (`AppError`).
    BadUserInput,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    ServiceUnavailable,
    RateLimited,
    #[strum(serialize = "INTERNAL_SERVER_ERROR")]
    Internal,
    // The GraphQL request itself.
    #[strum(serialize = "GRAPHQL_PARSE_FAILED")]
    GraphqlParseFailed,
    #[strum(serialize = "GRAPHQL_VALIDATION_FAILED")]
    GraphqlValidationFailed,
    Timeout,
    DocumentTooLarge,
    TooManyTokens,
    TooManyAliases,
    TooManyRootFields,
    TooManyFields,
    IntrospectionDisabled,
    CostLimitExceeded,
    /// A subscribe past `FOLIO_WS_MAX_SUBSCRIPTIONS` (per connection) or `FOLIO_LIVE_MAX_SUBSCRIPTIONS` (per instance).
    TooManySubscriptions,
    // Persisted documents.
    PersistedQueryNotFound,
    PersistedQueryNotAllowed,
    PersistedQueryHashMismatch,
    PersistedQueryNotSupported,
    // GraphQL over HTTP.
    BadRequest,
    BatchNotSupported,
    MethodNotAllowed,
    NotAcceptable,
    UnsupportedMediaType,
    PayloadTooLarge,
    // The Stripe webhook.
    WebhookNotConfigured,
    UnreadableBody,
    MissingSignature,
    MalformedSignature,
    #[strum(serialize = "NO_V1_SIGNATURE")]
    NoV1Signature,
    SignatureMismatch,
    TimestampOutOfTolerance,
    InvalidJson,
    InvalidEvent,
}

impl Code {
    /// The code as clients see it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A GraphQL response holding one request-level error: `{"errors": [{"message", "extensions": {"code"}}]}`.
pub fn graphql_error_body(code: Code, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code.as_str() } }]
    });
    body.to_string().into_bytes()
}

/// A plain HTTP route's error: `{"error": {"code", "message"}}`.
pub fn plain_error_body(code: Code, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": code.as_str(), "message": message } })
}

/// Per-field messages, keyed by the field name as the client spelled it (`title`, `email`, ...).
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// What went wrong, in terms a client can act on.
#[derive(Debug)]
pub enum AppError {
    /// The input is malformed or out of range. `field_errors` is empty for argument-level problems.
    BadUserInput {
        message: String,
        field_errors: FieldErrors,
    },
    /// No valid credentials were presented.
    Unauthenticated(String),
    /// Credentials are valid but do not allow this.
    Forbidden(String),
    /// The thing does not exist (or the caller may not know that it does).
    NotFound(String),
    /// The write conflicts with existing data (a taken email, ...).
    Conflict {
        message: String,
        field_errors: FieldErrors,
    },
    /// A dependency (the database) cannot serve right now; retrying later may work.
    Unavailable(String),
    /// Too many requests from this caller; retry after this many seconds.
    RateLimited { retry_after_secs: u64 },
    /// Anything else: logged in full, shown to the client only as a masked message.
    Internal(anyhow::Error),
}

impl AppError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::BadUserInput {
            message: message.into(),
            field_errors: FieldErrors::new(),
        }
    }

    pub fn internal(err: impl Into<anyhow::Error>) -> Self {
        Self::Internal(err.into())
    }

    /// The stable machine-readable code clients switch on.
    pub fn error_code(&self) -> Code {
        match self {
            Self::BadUserInput { .. } => Code::BadUserInput,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::Forbidden(_) => Code::Forbidden,
            Self::NotFound(_) => Code::NotFound,
            Self::Conflict { .. } => Code::Conflict,
            Self::Unavailable(_) => Code::ServiceUnavailable,
            Self::RateLimited { .. } => Code::RateLimited,
            Self::Internal(_) => Code::Internal,
        }
    }

    /// `error_code` as clients see it.
    pub fn code(&self) -> &'static str {
        self.error_code().as_str()
    }

    /// The HTTP status used when this error is the whole answer of a plain HTTP route.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadUserInput { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client may see. Internal details never appear here.
    pub fn public_message(&self) -> String {
        match self {
            Self::BadUserInput { message, .. } | Self::Conflict { message, .. } => message.clone(),
            Self::Unauthenticated(m)
            | Self::Forbidden(m)
            | Self::NotFound(m)
            | Self::Unavailable(m) => m.clone(),
            Self::RateLimited { retry_after_secs } => {
                format!("Too many requests; retry in {retry_after_secs} s.")
            }
            Self::Internal(_) => "Internal server error".to_owned(),
        }
    }

    fn field_errors(&self) -> Option<&FieldErrors> {
        match self {
            Self::BadUserInput { field_errors, .. } | Self::Conflict { field_errors, .. }
                if !field_errors.is_empty() =>
            {
                Some(field_errors)
            }
            _ => None,
        }
    }

    /// Writes the cause of a server-side failure to the log, inside the current request span.
    fn log(&self) {
        match self {
            Self::Internal(err) => tracing::error!(error = format!("{err:#}"), "internal error"),
            Self::Unavailable(m) => tracing::warn!(reason = %m, "dependency unavailable"),
            _ => {}
        }
    }
}

impl AppError {
    /// An unreachable or saturated database is `Unavailable` (the client may retry); `None` for anything else.
    fn db_unavailable(err: &sqlx::Error) -> Option<Self> {
        match err {
            sqlx::Error::PoolTimedOut => {
                tracing::warn!("database pool timed out");
                Some(Self::Unavailable(
                    "The database is busy or unreachable; try again shortly.".into(),
                ))
            }
            // `Protocol`: the server closed the connection mid-handshake (a restarting or overloaded database,
            // a proxy in between dropping it).
            sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => {
                tracing::warn!(error = %err, "database unreachable");
                Some(Self::Unavailable(
                    "The database is unreachable; try again shortly.".into(),
                ))
            }
            // PostgreSQL's own words for "not now": connection exceptions (class 08), the server shutting down
            // or restarting (57P01-57P03), too many connections (53300), the database missing (3D000).
            sqlx::Error::Database(db)
                if db.code().is_some_and(|c| {
                    c.starts_with("08") || c.starts_with("57P0") || c == "53300" || c == "3D000"
                }) =>
            {
                tracing::warn!(error = %err, "database unavailable");
                Some(Self::Unavailable(
                    "The database is unavailable; try again shortly.".into(),
                ))
            }
            _ => None,
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(err: sqlx::Error) -> Self {
        Self::db_unavailable(&err)
            .unwrap_or_else(|| Self::Internal(anyhow::Error::new(err).context("database error")))
    }
}

/// A batched load failed; the error is shared by every key of the batch.
impl From<std::sync::Arc<AppError>> for AppError {
    fn from(err: std::sync::Arc<AppError>) -> Self {
        std::sync::Arc::try_unwrap(err).unwrap_or_else(|shared| shared.duplicate())
    }
}

impl AppError {
    /// A copy for each key of a failed batch (`anyhow::Error` cannot be cloned, so its chain becomes text).
    fn duplicate(&self) -> Self {
        match self {
            Self::BadUserInput {
                message,
                field_errors,
            } => Self::BadUserInput {
                message: message.clone(),
                field_errors: field_errors.clone(),
            },
            Self::Conflict {
                message,
                field_errors,
            } => Self::Conflict {
                message: message.clone(),
                field_errors: field_errors.clone(),
            },
            Self::Unauthenticated(m) => Self::Unauthenticated(m.clone()),
            Self::Forbidden(m) => Self::Forbidden(m.clone()),
            Self::NotFound(m) => Self::NotFound(m.clone()),
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            Self::RateLimited { retry_after_secs } => Self::RateLimited {
                retry_after_secs: *retry_after_secs,
            },
            Self::Internal(e) => Self::Internal(anyhow::anyhow!("{e:#}")),
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

/// For tools (seed, migrate) that report errors rather than answer requests.
impl From<AppError> for anyhow::Error {
    fn from(err: AppError) -> Self {
        match err {
            AppError::Internal(inner) => inner,
            other => anyhow::anyhow!("{}: {}", other.code(), other.public_message()),
        }
    }
}

impl From<AppError> for async_graphql::Error {
    fn from(err: AppError) -> Self {
        err.log();
        let message = err.public_message();
        let code = err.code();
        let field_errors = err.field_errors().cloned();
        let retry_after = match err {
            AppError::RateLimited { retry_after_secs } => Some(retry_after_secs),
            _ => None,
        };
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(secs) = retry_after {
                ext.set("retryAfter", secs);
            }
            if let Some(fields) = field_errors {
                let map: async_graphql::indexmap::IndexMap<
                    async_graphql::Name,
                    async_graphql::Value,
                > = fields
                    .into_iter()
                    .map(|(k, v)| {
                        let list = v.into_iter().map(async_graphql::Value::String).collect();
                        (
                            async_graphql::Name::new(k),
                            async_graphql::Value::List(list),
                        )
                    })
                    .collect();
                ext.set("fieldErrors", async_graphql::Value::Object(map));
            }
        })
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        let body = plain_error_body(self.error_code(), &self.public_message());
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let Self::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::Code;

    use strum::IntoEnumIterator;

    #[test]
    fn every_code_is_spelled_once_in_screaming_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::iter() {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{s}"
            );
            assert_eq!(s.parse::<Code>().ok(), Some(code));
        }
        assert_eq!(Code::Internal.as_str(), "INTERNAL_SERVER_ERROR");
        assert_eq!(Code::GraphqlParseFailed.as_str(), "GRAPHQL_PARSE_FAILED");
    }

    #[test]
    fn the_api_docs_list_every_code() {
        let docs = include_str!("../docs/api.md");
        for code in Code::iter() {
            assert!(
                docs.contains(&format!("`{}`", code.as_str())),
                "docs/api.md does not list {code}"
            );
        }
    }
}
