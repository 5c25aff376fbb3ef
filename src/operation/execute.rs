//! Executing a parsed operation: through the document's compiled plan when one takes the request
//! (`graphql/compiled`), otherwise on the async-graphql executor with the request's batched loaders; then giving
//! every error a code and serialising the response.

use async_graphql::{ErrorExtensionValues, ServerError, Value};

use super::documents::Kept;
use super::{Pipeline, Status};
use crate::cache::{Entry, Tracker, unix_now};
use crate::error::Code;
use crate::graphql::batch::Batched;
use crate::graphql::compiled;
use crate::graphql::loaders::Loaders;
use crate::replicas::Route;
use crate::store::Store;
use std::sync::Arc;

/// What an execution produced: the executor's response, or a compiled operation's bytes.
pub(super) enum Executed {
    Graphql(async_graphql::Response),
    Compiled(compiled::Output, async_graphql::CacheControl),
}

impl Executed {
    pub(super) fn cache_control(&self) -> async_graphql::CacheControl {
        match self {
            Executed::Graphql(r) => r.cache_control,
            Executed::Compiled(_, c) => *c,
        }
    }

    pub(super) fn has_errors(&self) -> bool {
        match self {
            Executed::Graphql(r) => !r.errors.is_empty(),
            Executed::Compiled(..) => false,
        }
    }

    /// How the response reads as a whole: a request error (no data, nothing ran), rate-limited, or a normal
    /// answer (with or without field errors).
    pub(super) fn status(&self) -> Status {
        match self {
            Executed::Graphql(r) if is_request_error(r) => Status::RequestError,
            Executed::Graphql(r) => match retry_after(r) {
                Some(retry_after) => Status::RateLimited { retry_after },
                None => Status::Ok,
            },
            Executed::Compiled(..) => Status::Ok,
        }
    }

    /// The serialised response (see `entry_for`).
    pub(super) fn entry(self, max_age: u32, public: bool, cacheable: bool) -> Entry {
        match self {
            Executed::Graphql(r) => {
                let request_error = is_request_error(&r);
                entry_for(&r, max_age, public, request_error, cacheable)
            }
            Executed::Compiled(out, _) => entry_of(out.body, max_age, public, cacheable),
        }
    }
}

impl Pipeline {
    /// Executes until `deadline`. `None` when it ran out of time: the execution future is dropped, which
    /// cancels its statements and returns their connections to the pool. `tracker` is the cache's (on a miss),
    /// which a compiled run records its tags in.
    ///
    /// A query (`who.reads_replica`) runs on a read replica when one is healthy, and its answer stands only if
    /// the replica had replayed every write to the tags it read (see `replicas`); otherwise, or if it failed,
    /// it runs again on the primary, and nothing of the replica run is answered.
    pub(super) async fn execute(
        &self,
        request: async_graphql::Request,
        who: &super::Run,
        parse_failed: bool,
        kept: Option<&Kept>,
        tracker: Option<&Arc<Tracker>>,
    ) -> Option<Executed> {
        if who.reads_replica
            && let Some(replicas) = &self.replicas
            && let Some(pick) = replicas.pick().await
        {
            let own;
            let tracker = match tracker {
                Some(tracker) => tracker,
                None => {
                    own = Arc::new(Tracker::default());
                    &own
                }
            };
            let mut twin = async_graphql::Request::new(request.query.clone())
                .variables(request.variables.clone())
                .data(who.viewer.clone())
                .data(Arc::clone(tracker));
            twin.operation_name = request.operation_name.clone();
            twin.extensions = request.extensions.clone();
            let executed = self
                .execute_on(
                    Some(&pick.store),
                    twin,
                    who,
                    parse_failed,
                    kept,
                    Some(tracker),
                )
                .await?;
            let route = if executed.has_errors() {
                Route::PrimaryAfterError
            } else {
                replicas.covers(&tracker.tags(), pick.replayed).await
            };
            replicas.count(route);
            if route == Route::Replica {
                return Some(executed);
            }
        }
        self.execute_on(None, request, who, parse_failed, kept, tracker)
            .await
    }

    /// `execute` on `replica`, or on the primary (`None`).
    async fn execute_on(
        &self,
        replica: Option<&Store>,
        request: async_graphql::Request,
        who: &super::Run,
        parse_failed: bool,
        kept: Option<&Kept>,
        tracker: Option<&Arc<Tracker>>,
    ) -> Option<Executed> {
        let store = replica.unwrap_or(&self.store);
        let tracker = tracker.map(|t| &**t);
        let (request_id, deadline, cost) = (who.request_id.as_str(), who.deadline, who.cost);
        let operation = request.operation_name.clone();
        if let Some(plan) = kept.and_then(|k| k.plan(operation.as_deref(), &request.variables)) {
            let run = plan.run(
                store,
                &who.viewer,
                &request.variables,
                self.max_complexity,
                tracker,
            );
            match tokio::time::timeout_at(deadline, run).await {
                Ok(Some(mut output)) => {
                    self.metrics.compiled.inc();
                    if let Some(estimated) = cost {
                        add_cost(&mut output.body, estimated);
                    }
                    return Some(Executed::Compiled(output, plan.cache_control()));
                }
                // Not for this request's values: the executor answers it.
                Ok(None) => {}
                Err(_) => {
                    self.timeout_warning();
                    return None;
                }
            }
        }
        let mut request = request;
        if let Some(kept) = kept {
            request.set_parsed_query(kept.document());
        }
        // Kept to plan the document with, should this execution succeed.
        let variables = kept
            .filter(|k| k.may_plan())
            .map(|_| request.variables.clone());
        let (loaders, dispatcher) = Loaders::new(store.clone());
        let mut request = request.data(loaders);
        if let Some(replica) = replica {
            // Resolvers that ask the context for the store read the replica too.
            request = request.data(replica.clone());
        }
        let run = Batched::new(dispatcher, self.schema.execute(request));
        match tokio::time::timeout_at(deadline, run).await {
            Ok(mut response) => {
                finish_errors(&mut response, request_id, parse_failed);
                self.0.service_sdl.fix(&mut response.data);
                if let Some(estimated) = cost {
                    response.extensions.insert(
                        "cost".to_owned(),
                        Value::from_json(serde_json::json!({ "estimated": estimated }))
                            .unwrap_or_default(),
                    );
                }
                if let (true, Some(kept), Some(variables)) =
                    (response.errors.is_empty(), kept, variables)
                {
                    kept.executed(operation.as_deref(), &variables, response.cache_control);
                }
                Some(Executed::Graphql(response))
            }
            Err(_) => {
                self.timeout_warning();
                None
            }
        }
    }

    /// Executes a subscription for one trigger on the executor: the subscription's resolvers yield a finite
    /// stream for it (see `graphql::posts::subscription`), collected here with the request's batched loaders.
    /// `None` when it ran out of time.
    pub(super) async fn execute_stream(
        &self,
        request: async_graphql::Request,
        who: &super::Run,
        kept: &Kept,
    ) -> Option<Vec<Executed>> {
        use futures_util::StreamExt;
        let mut request = request;
        request.set_parsed_query(kept.document());
        let (loaders, dispatcher) = Loaders::new(self.store.clone());
        let request = request.data(loaders);
        let collect = self
            .schema
            .execute_stream(request)
            .collect::<Vec<async_graphql::Response>>();
        let run = Batched::new(dispatcher, collect);
        match tokio::time::timeout_at(who.deadline, run).await {
            Ok(responses) => Some(
                responses
                    .into_iter()
                    .map(|mut response| {
                        finish_errors(&mut response, &who.request_id, false);
                        Executed::Graphql(response)
                    })
                    .collect(),
            ),
            Err(_) => {
                self.timeout_warning();
                None
            }
        }
    }

    fn timeout_warning(&self) {
        tracing::warn!(
            timeout_ms = self.limits.request_timeout.as_millis() as u64,
            "GraphQL execution timed out and was stopped"
        );
    }
}

/// Appends `"extensions": {"cost": {"estimated": n}}` to a compiled response's JSON object (which has no
/// `extensions` of its own).
fn add_cost(body: &mut Vec<u8>, estimated: u64) {
    if body.last() == Some(&b'}') {
        body.pop();
        body.extend_from_slice(
            format!(r#","extensions":{{"cost":{{"estimated":{estimated}}}}}}}"#).as_bytes(),
        );
    }
}

/// Gives every error a code, and internal errors the request id.
fn finish_errors(response: &mut async_graphql::Response, request_id: &str, parse_failed: bool) {
    for err in &mut response.errors {
        let code = err
            .extensions
            .as_ref()
            .and_then(|ext| ext.get("code"))
            .and_then(|v| {
                if let Value::String(s) = v {
                    Some(s.clone())
                } else {
                    None
                }
            });
        let code = match code {
            Some(code) => code,
            None => {
                let code = default_code(err, parse_failed).as_str();
                extensions(err).set("code", code);
                code.to_owned()
            }
        };
        if code == Code::Internal.as_str() {
            extensions(err).set("requestId", request_id);
        }
    }
}

fn extensions(err: &mut ServerError) -> &mut ErrorExtensionValues {
    err.extensions
        .get_or_insert_with(ErrorExtensionValues::default)
}

/// The code for an error async-graphql raised itself: before execution (no path) the document could not be
/// parsed (the caller knows: it parsed the document first) or failed validation (limits included); during
/// execution an argument could not be coerced.
fn default_code(err: &ServerError, parse_failed: bool) -> Code {
    // async-graphql's answer to an `_entities` representation no entity resolver can take (an id of the wrong
    // type): the client's value, not its document.
    if !err.path.is_empty() || err.message == "Entity not found." {
        Code::BadUserInput
    } else if parse_failed {
        Code::GraphqlParseFailed
    } else {
        Code::GraphqlValidationFailed
    }
}

/// The `retryAfter` of a `RATE_LIMITED` error in the response, if any.
fn retry_after(response: &async_graphql::Response) -> Option<u64> {
    response.errors.iter().find_map(|e| {
        let ext = e.extensions.as_ref()?;
        match (ext.get("code"), ext.get("retryAfter")) {
            (Some(Value::String(code)), Some(Value::Number(n)))
                if code == Code::RateLimited.as_str() =>
            {
                n.as_u64()
            }
            _ => None,
        }
    })
}

/// A request error: no data, and errors that are about the request rather than a field (parse, validation).
fn is_request_error(response: &async_graphql::Response) -> bool {
    matches!(response.data, Value::Null)
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// The serialised response. Only a cacheable one gets an `ETag` (a digest of the body): the others are never
/// validated, so hashing them would be work for nothing on every mutation and uncached request.
fn entry_for(
    response: &async_graphql::Response,
    max_age: u32,
    public: bool,
    request_error: bool,
    cacheable: bool,
) -> Entry {
    let body = if request_error {
        // The spec: a request error's response has no `data` entry at all.
        serde_json::to_vec(&serde_json::json!({ "errors": response.errors }))
    } else {
        serde_json::to_vec(response)
    };
    let body = match body {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "serialising a response failed");
            crate::error::graphql_error_body(Code::Internal, "Internal server error")
        }
    };
    entry_of(body, max_age, public, cacheable)
}

/// The entry for a serialised response body.
///
/// The ETag is a 128-bit XXH3 of the body: a validator only has to change when the body does, and nobody
/// gains from forging a collision with a response they can read anyway. SHA-256 cost several microseconds per
/// cache miss on a post page (5-6 KiB); XXH3 costs a fraction of one.
fn entry_of(body: Vec<u8>, max_age: u32, public: bool, cacheable: bool) -> Entry {
    let etag = if cacheable {
        // `"<32 lower-case hex digits>"`, written without the formatting machinery.
        let mut etag = String::with_capacity(34);
        etag.push('"');
        crate::cache::push_hex(&xxhash_rust::xxh3::xxh3_128(&body).to_be_bytes(), &mut etag);
        etag.push('"');
        etag
    } else {
        String::new()
    };
    Entry {
        etag,
        body: body.into(),
        max_age,
        public,
        stored_at: unix_now(),
    }
}

#[cfg(test)]
mod tests {
    /// The ETag clients revalidate with: the body's 128-bit XXH3 as 32 lower-case hex digits, quoted.
    #[test]
    fn an_etag_is_the_quoted_hex_digest_of_its_body() {
        for body in [&b"{\"data\":{\"post\":null}}"[..], b"", b"{\"data\":{}}"] {
            let entry = super::entry_of(body.to_vec(), 60, true, true);
            let digest = xxhash_rust::xxh3::xxh3_128(body);
            assert_eq!(entry.etag, format!("\"{digest:032x}\""));
        }
        assert!(
            super::entry_of(b"{}".to_vec(), 0, false, false)
                .etag
                .is_empty()
        );
    }
}
