//! The operation pipeline: running one GraphQL operation for a viewer, whatever transport carried it.
//!
//! `Pipeline::run` takes a plain `Request` (document text or persisted id, operation name, variables, viewer,
//! client address, deadline) and returns an `Outcome` (body, cache policy, status class, tags read) that knows
//! nothing about HTTP. In order:
//! - which document runs: the text sent, or the one an APQ hash or a trusted-document id names, if the
//!   `FOLIO_DOCUMENTS` mode runs it (`persisted`);
//! - the document: found among recent ones (`documents`) or parsed once, its size and token count checked
//!   before anything else (`limits`);
//! - a query is looked up in the response cache before it is parsed; a hit is answered from the stored bytes;
//! - a miss executes once per key on this instance (single-flight), with a `Tracker` recording the tags it read
//!   and whether its answer depends on the caller; a cacheable result is stored. On Redis, a document whose
//!   lookups keep missing starts executing beside its lookup instead of after it (`run_ahead`);
//! - mutations (and everything when the cache is off or unreachable) execute directly; the tags their committed
//!   writes affect are purged before the outcome is returned, so once a client has the answer no instance
//!   serves anything older;
//! - execution runs through the document's compiled plan when it has one, otherwise on the executor with the
//!   request's batched loaders (`execute`).
//!
//! Subscriptions and `@live` queries go through `Pipeline::open` (`live`): the same resolution, limits and
//! cost, then a stream of results instead of one outcome.
//!
//! Transports (`http`: POST/GET, WebSocket, SSE) turn the outcome into their own framing.

pub mod check;
pub mod cost;
mod documents;
mod execute;
mod limits;
mod live;
mod outcome;
pub mod persisted;

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::parser::types::{DocumentOperations, OperationType};
use tokio::time::Instant;

use crate::auth::Viewer;
use crate::cache::flight::SingleFlight;
use crate::cache::{Cache, Key, KeyBase, Keys, Lookup, Purges, Scope, Snapshot, Tags, Tracker};
use crate::config::EdgeConfig;
use crate::error::Code;
use crate::graphql::FolioSchema;
use crate::graphql::context::ClientAddr;
use crate::store::Store;
use crate::telemetry::Metrics;

use documents::{Documents, Kept, Parsed};
pub use limits::MAX_EXPANDED_FIELDS;
pub use live::{LiveStream, Opened};
pub use outcome::{CacheStatus, Outcome, Status};

/// One operation to run, as a transport hands it over.
pub struct Request {
    /// The document's text (absent when the request names a persisted document).
    pub document: Option<String>,
    /// A trusted document's id (`documentId`, see `persisted`).
    pub document_id: Option<String>,
    pub operation_name: Option<String>,
    pub variables: async_graphql::Variables,
    pub extensions: async_graphql::Extensions,
    /// Who asks (already authenticated by the transport).
    pub viewer: Viewer,
    /// The client's address, for per-address limits inside resolvers (`login`).
    pub client: IpAddr,
    /// Echoed in masked internal errors, as in the log line.
    pub request_id: String,
    /// Which operation types the transport may run (`GET` runs queries only).
    pub accepts: Accepts,
    /// When execution must stop; `None`: `FOLIO_REQUEST_TIMEOUT_MS` from now.
    pub deadline: Option<Instant>,
    /// The caller may read the schema's definition (`_service { sdl }`): decided by the transport with
    /// `EdgeConfig::reveals_sdl`, the one rule for it.
    pub reveals_sdl: bool,
}

/// Which operation types a request may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepts {
    Any,
    /// Queries only: anything else answers `Status::NotAllowed` (`GET` in GraphQL over HTTP).
    QueriesOnly,
    /// Queries and subscriptions, no mutations (`GET` with `Accept: text/event-stream`: GraphQL over SSE).
    NoMutations,
}

/// What the pipeline needs, built once by `App`.
pub struct PipelineParts {
    pub schema: FolioSchema,
    pub store: Store,
    pub cache: Arc<Cache>,
    pub limits: Arc<EdgeConfig>,
    /// The schema's complexity limit, which compiled plans check themselves (`graphql/compiled`).
    pub max_complexity: usize,
    /// Persisted documents: APQ, trusted manifests and the mode that says which documents run.
    pub persisted: persisted::Persisted,
    /// The largest estimated cost an operation may have (`None`: no limit), and whether responses carry it.
    pub max_cost: Option<u64>,
    pub cost_extension: bool,
    pub metrics: Metrics,
    /// Running subscriptions and live queries (`live`).
    pub live: Arc<crate::live::Registry>,
    /// Read replicas (`DATABASE_REPLICA_URLS`), if any.
    pub replicas: Option<Arc<crate::replicas::Replicas>>,
    /// Put documents on operation spans (`FOLIO_TRACE_DOCUMENTS`).
    pub trace_documents: bool,
}

/// Runs operations. Cheap to clone: every transport holds one.
#[derive(Clone)]
pub struct Pipeline(Arc<Inner>);

struct Inner {
    parts: PipelineParts,
    /// Puts the linked subgraph SDL into `_service { sdl }` answers.
    service_sdl: crate::graphql::schema::ServiceSdl,
    /// Prices operations from the schema's `@cost`/`@listSize` (read from the SDL the gateways see).
    costs: cost::CostModel,
    /// Queries executing right now, by cache key (single-flight).
    flights: SingleFlight<Key, Arc<Computed>>,
    /// Parsed documents of recent operations.
    documents: Documents,
}

impl std::ops::Deref for Pipeline {
    type Target = PipelineParts;
    fn deref(&self) -> &PipelineParts {
        &self.0.parts
    }
}

/// A computed response, shared by every request of one flight.
struct Computed {
    entry: crate::cache::Entry,
    cacheable: bool,
    status: Status,
    /// Up to when in purge order this result is known fresh; `None`: not known (do not share it).
    valid: Option<Snapshot>,
    /// The tags the execution read (empty for a result it did not compute itself).
    tags: Tags,
}

/// What `operate` learnt before the cache answered nothing: when the request times out, the recent document, if
/// any, the caller's scope, the keys (`None` with the cache off), whether the cache is bypassed, and the purge
/// position its lookup took.
struct Missed {
    deadline: Instant,
    known: Option<Arc<Kept>>,
    scope: Scope,
    keys: Option<Keys>,
    bypass: bool,
    early: Option<Snapshot>,
    /// Set when execution starts before the lookup answers (`run_ahead`): whether its result may be stored.
    verdict: Option<Verdict>,
}

/// What the lookup of a request that started executing without waiting for it found (`run_ahead`): `None` until
/// it answers; then the point in purge order it read on a miss (the request's arrival: its result may be stored,
/// and another request's result must be this fresh to be shared), or `Some(None)` when it could not tell
/// (nothing is stored or shared).
type Verdict = tokio::sync::watch::Receiver<Option<Option<Snapshot>>>;

/// The snapshot `verdict` ends with; `None` if its lookup could not tell, or went away.
async fn looked_up(mut verdict: Verdict) -> Option<Snapshot> {
    match verdict.wait_for(Option::is_some).await {
        Ok(found) => found.clone().flatten(),
        Err(_) => None,
    }
}

/// A GraphQL request and, if it parsed, its kept document.
struct Operation {
    request: async_graphql::Request,
    kept: Option<Arc<Kept>>,
}

impl Pipeline {
    pub fn new(parts: PipelineParts) -> anyhow::Result<Self> {
        let costs =
            cost::CostModel::from_sdl(&crate::graphql::schema::subgraph_sdl_of(&parts.schema))?;
        Ok(Self(Arc::new(Inner {
            service_sdl: crate::graphql::schema::ServiceSdl::of(&parts.schema),
            costs,
            parts,
            flights: SingleFlight::default(),
            documents: Documents::default(),
        })))
    }

    /// Runs `request` and returns what to answer.
    pub async fn run(&self, mut request: Request) -> Outcome {
        match self.resolve(&mut request).await {
            Ok(document) => self.run_resolved(document, request).await,
            Err(outcome) => outcome,
        }
    }

    /// Which document runs: the text sent, or the persisted one the request names (if the mode runs it). Takes
    /// the document fields out of `request`, which then carries the rest to `run_resolved` or `open_live`.
    async fn resolve(&self, request: &mut Request) -> Result<String, Outcome> {
        let document_id = request.document_id.take();
        let sent = persisted::Sent {
            text: request.document.take(),
            document_id: document_id.as_deref(),
            extensions: &request.extensions,
        };
        self.persisted
            .resolve(sent, &self.limits)
            .await
            .map_err(|refused| Outcome::request_error(refused.code, &refused.message))
    }

    /// The operation's type and estimated cost, if the document is within the limits and the cost budget, and
    /// whether it reads the schema's definition while that is not public (then its answer is never cached:
    /// a stored copy would be served to anyone sending the same text).
    fn admit(
        &self,
        document: &async_graphql::parser::types::ExecutableDocument,
        operation_name: Option<&str>,
        variables: &async_graphql::Variables,
        reveals_sdl: bool,
    ) -> Result<Admitted, Outcome> {
        let kind = limits::check_document(document, operation_name, &self.limits)
            .map_err(|e| Outcome::request_error(e.code, &e.message))?;
        limits::coerce_variables(document, operation_name, variables)
            .map_err(|e| Outcome::request_error(e.code, &e.message))?;
        let private_sdl =
            !self.limits.introspection && limits::selects_sdl(document, operation_name);
        if private_sdl && !reveals_sdl {
            return Err(Outcome::request_error(
                Code::IntrospectionDisabled,
                "The schema's definition is served only to the federation gateway (FOLIO_GATEWAY_SECRET) while \
                 introspection is off.",
            ));
        }
        let mut cost = None;
        if self.max_cost.is_some() || self.cost_extension {
            cost = self.0.costs.estimate(document, operation_name, variables);
        }
        if let (Some(estimated), Some(max)) = (cost, self.max_cost)
            && estimated > max
        {
            return Err(Outcome::too_costly(estimated, max));
        }
        Ok(Admitted {
            kind,
            cost,
            private_sdl,
        })
    }

    /// `run` once the document is known, in the operation's span (when traces are exported).
    async fn run_resolved(&self, document: String, request: Request) -> Outcome {
        use tracing::Instrument;
        if !crate::telemetry::tracing_enabled() {
            return self.operate(document, request).await;
        }
        let span = tracing::info_span!(
            "graphql.operation",
            otel.name = "GraphQL Operation",
            graphql.operation.type = tracing::field::Empty,
            graphql.operation.name = request.operation_name.as_deref(),
            graphql.document = tracing::field::Empty,
        );
        if self.trace_documents {
            span.record("graphql.document", document.as_str());
        }
        self.operate(document, request).instrument(span).await
    }

    /// Names the current operation span after the operation (GraphQL semantic conventions).
    fn name_span(kind: OperationType, name: Option<&str>) {
        if !crate::telemetry::tracing_enabled() {
            return;
        }
        let kind = match kind {
            OperationType::Query => "query",
            OperationType::Mutation => "mutation",
            OperationType::Subscription => "subscription",
        };
        let span = tracing::Span::current();
        span.record("graphql.operation.type", kind);
        if let Some(name) = name {
            span.record("graphql.operation.name", name);
        }
        // The span has started (it was entered): rename the exported span itself.
        crate::telemetry::rename(
            &span,
            match name {
                Some(name) => format!("{kind} {name}"),
                None => kind.to_owned(),
            },
        );
    }

    async fn operate(&self, document: String, request: Request) -> Outcome {
        // The timeout counts from here, the cache lookup included.
        let deadline = request
            .deadline
            .unwrap_or_else(|| Instant::now() + self.limits.request_timeout);
        // A recent document has passed the limits, and its key hash is known: a repeated query (a cache hit above
        // all) neither scans nor normalises its text again.
        let known = self.0.documents.get(&document);
        if known.is_none()
            && let Err(e) = limits::check_text(&document, &self.limits)
        {
            return Outcome::request_error(e.code, &e.message);
        }
        let scope = match &request.viewer {
            Viewer::Anonymous => Scope::Anonymous,
            Viewer::User { id, .. } => Scope::User(*id),
        };
        // With the cache off there is nothing to hash or look up.
        let (keys, bypass, early) = if self.cache.enabled() {
            let vars = serde_json::to_vec(&request.variables).unwrap_or_default();
            let operation = request.operation_name.as_deref();
            let keys = match &known {
                Some(kept) => KeyBase::of(kept.hash(), operation, &vars),
                None => KeyBase::new(&document, operation, &vars),
            }
            .keys(&scope);
            if let Some(kept) = &known
                && kept.misses_in_a_row()
                && let Some(start) = self.cache.recent()
            {
                let kept = Arc::clone(kept);
                let missed = Missed {
                    deadline,
                    known,
                    scope,
                    keys: Some(keys),
                    bypass: false,
                    early: Some(start),
                    verdict: None,
                };
                return Box::pin(self.run_ahead(document, request, kept, missed)).await;
            }
            let found = self.cache.lookup(&keys).await;
            if let Some(kept) = &known
                && !matches!(found, Lookup::Bypass)
            {
                kept.looked_up(operation, matches!(found, Lookup::Hit(_)));
            }
            match found {
                Lookup::Hit(entry) => {
                    // Only queries are stored.
                    let named = match &known {
                        Some(kept) => {
                            operation_label(kept.document_ref(), request.operation_name.as_deref())
                        }
                        None => request.operation_name.as_deref(),
                    };
                    Self::name_span(OperationType::Query, named);
                    return Outcome::hit(entry);
                }
                Lookup::Miss(early) => (Some(keys), false, early),
                Lookup::Bypass => (Some(keys), true, None),
            }
        } else {
            (None, true, None)
        };
        let missed = Missed {
            deadline,
            known,
            scope,
            keys,
            bypass,
            early,
            verdict: None,
        };
        // Boxed: execution's future is many times a hit's, and every request's future is moved into place
        // whole, so inline it would make each hit copy kilobytes it never uses.
        Box::pin(self.run_missed(document, request, missed)).await
    }

    /// `operate` for a document whose lookups have kept missing (`Kept::misses_in_a_row`): its execution starts
    /// at once, as of the last point in purge order this instance read (`Cache::recent`), while the lookup runs
    /// beside it. A hit drops the execution (its statements are cancelled) and is answered; a miss lets the
    /// execution's result be stored; a lookup that cannot tell (Redis unreachable, purges undelivered) keeps it
    /// from being stored. Why: with Redis, a miss waited a round trip (and the call before it) before it read
    /// anything, and under load the requests waiting there were requests missing from the database's shared
    /// statements, which then served fewer at a time.
    async fn run_ahead(
        &self,
        document: String,
        request: Request,
        kept: Arc<Kept>,
        mut missed: Missed,
    ) -> Outcome {
        use futures_util::future::{Either, select};
        let Some(keys) = missed.keys else {
            return self.run_missed(document, request, missed).await;
        };
        self.cache.metrics().ahead.inc();
        let (verdict, awaited) = tokio::sync::watch::channel(None);
        missed.verdict = Some(awaited);
        let operation_name = request.operation_name.clone();
        let work = std::pin::pin!(self.run_missed(document, request, missed));
        let lookup = std::pin::pin!(self.cache.lookup(&keys));
        let (found, work) = match select(lookup, work).await {
            Either::Left((found, work)) => (found, work),
            // Answered before the lookup: a result that is not stored (errors, no lifetime). It was executed
            // for this request, so it counts as a miss.
            Either::Right((outcome, _)) => return self.count_ahead(outcome, true),
        };
        let arrival = match found {
            Lookup::Hit(entry) => {
                self.cache.metrics().ahead_dropped.inc();
                kept.looked_up(operation_name.as_deref(), true);
                Self::name_span(
                    OperationType::Query,
                    operation_label(kept.document_ref(), operation_name.as_deref()),
                );
                return Outcome::hit(entry);
            }
            Lookup::Miss(Some(arrival)) => {
                kept.looked_up(operation_name.as_deref(), false);
                Some(arrival)
            }
            Lookup::Miss(None) | Lookup::Bypass => None,
        };
        let looked = arrival.is_some();
        let _ = verdict.send(Some(arrival));
        let outcome = work.await;
        self.count_ahead(outcome, looked)
    }

    /// Counts a `run_ahead` outcome as its lookup turned out: a miss, or (its lookup could not tell) a bypass.
    fn count_ahead(&self, mut outcome: Outcome, looked_up: bool) -> Outcome {
        if outcome.cache == CacheStatus::Miss {
            if looked_up {
                self.cache.metrics().misses.inc();
            } else {
                self.cache.metrics().bypass.inc();
                outcome.cache = CacheStatus::Bypass;
            }
        }
        outcome
    }

    /// `operate` past the cache: parses, admits and executes the operation, sharing one execution among
    /// identical concurrent misses and storing what may be stored.
    async fn run_missed(&self, document: String, request: Request, missed: Missed) -> Outcome {
        let Request {
            operation_name,
            variables,
            extensions,
            viewer,
            client,
            request_id,
            accepts,
            reveals_sdl,
            ..
        } = request;
        let Missed {
            deadline,
            known,
            scope,
            keys,
            bypass,
            early,
            verdict,
        } = missed;
        // Parsed once here (or found among recent documents); execution reuses the parsed document.
        let mut parse_failed = false;
        let mut kept = None;
        let parsed = match known {
            Some(kept) => Ok(Parsed::Kept(kept)),
            None => self.0.documents.parse(&document),
        };
        let mut cost = None;
        let mut private_sdl = false;
        let kind = match parsed {
            Ok(parsed) => {
                let admitted = match self.admit(
                    parsed.document(),
                    operation_name.as_deref(),
                    &variables,
                    reveals_sdl,
                ) {
                    Ok(admitted) => admitted,
                    Err(outcome) => return outcome,
                };
                cost = admitted.cost;
                private_sdl = admitted.private_sdl;
                let kind = admitted.kind;
                if let Some(kind) = kind {
                    Self::name_span(
                        kind,
                        operation_label(parsed.document(), operation_name.as_deref()),
                    );
                }
                // The executor gets its copy in `execute`, if it runs.
                kept = Some(match parsed {
                    Parsed::Kept(kept) => kept,
                    Parsed::Fresh(doc) => self.0.documents.keep(&document, doc),
                });
                kind
            }
            // Execution reports the error in the usual shape. Only a syntax error is a parse failure; the parser
            // also refuses documents it cannot pick an operation from (several anonymous ones, duplicates), which
            // are validation failures.
            Err(err) => {
                parse_failed = matches!(
                    err,
                    async_graphql::parser::Error::Syntax { .. }
                        | async_graphql::parser::Error::RecursionLimitExceeded
                );
                None
            }
        };
        let mut graphql = async_graphql::Request::new(document).variables(variables);
        graphql.operation_name = operation_name;
        graphql.extensions = extensions;
        let run = Run {
            viewer,
            client,
            request_id,
            deadline,
            parse_failed,
            cost: cost.filter(|_| self.cost_extension),
            reads_replica: kind == Some(OperationType::Query),
        };
        if kind != Some(OperationType::Query) {
            if accepts != Accepts::Any && kind.is_some() {
                return Outcome::not_allowed();
            }
            return self.uncached(graphql, kept, run).await;
        }
        let Some(keys) = keys else {
            return self.uncached(graphql, kept, run).await;
        };
        if private_sdl {
            return self.uncached(graphql, kept, run).await;
        }
        // Where this request stands in purge order, before anything is read: purges from now on make its result
        // unstorable, and a shared result must be at least this fresh.
        let arrival = match (bypass, early) {
            (true, _) => None,
            // The lookup took it: nothing has been read since.
            (false, Some(early)) => Some(early),
            (false, None) => self.cache.begin().await,
        };
        let Some(arrival) = arrival else {
            // Without the cache's view of purges, a running execution cannot be shown to be fresh enough to
            // share: execute alone.
            self.cache.metrics().bypass.inc();
            let operation = Operation {
                request: graphql,
                kept,
            };
            let computed = self
                .clone()
                .compute(operation, run, keys, scope, None, None)
                .await;
            return computed.outcome(CacheStatus::Bypass);
        };
        if verdict.is_none() {
            // `run_ahead` counts its own, once its lookup has answered.
            self.cache.metrics().misses.inc();
        }
        let flight_key = keys.own;
        // Kept in case a shared result turns out too old for this request (rare): it then executes on its own.
        let mut again =
            async_graphql::Request::new(graphql.query.clone()).variables(graphql.variables.clone());
        again.operation_name = graphql.operation_name.clone();
        again.extensions = graphql.extensions.clone();
        let work = self.clone().compute(
            Operation {
                request: graphql,
                kept: kept.clone(),
            },
            run.clone(),
            keys,
            scope.clone(),
            Some(arrival.clone()),
            verdict.clone(),
        );
        let (computed, ran) = self.0.flights.run(flight_key, work).await;
        // Another request's execution is usable only if it is known fresh as of this request's arrival (it may
        // have started before a mutation that returned before this request came in). Started ahead of its
        // lookup, a request knows its arrival once the lookup answers: the point it started at was read before
        // it arrived, so purges that returned in between are not in it.
        let arrived = match &verdict {
            _ if ran => None,
            None => Some(arrival.clone()),
            Some(verdict) => looked_up(verdict.clone()).await,
        };
        let computed = match arrived {
            None if ran => computed,
            Some(arrived) if computed.valid.as_ref().is_some_and(|v| v.covers(&arrived)) => {
                computed
            }
            _ => {
                let operation = Operation {
                    request: again,
                    kept,
                };
                self.clone()
                    .compute(operation, run, keys, scope, Some(arrival), verdict)
                    .await
            }
        };
        computed.outcome(CacheStatus::Miss)
    }

    /// Executes a query on a miss, and stores the result if it may be cached. `snapshot` is where the request
    /// stood in purge order before anything was read (`None`: the cache cannot tell; nothing is stored). An
    /// execution that started before its lookup answered (`run_ahead`) stores only once `verdict` allows it.
    async fn compute(
        self,
        Operation { request, kept }: Operation,
        run: Run,
        keys: Keys,
        scope: Scope,
        snapshot: Option<Snapshot>,
        verdict: Option<Verdict>,
    ) -> Arc<Computed> {
        // A request that missed just as another flight for the same key finished finds its entry now: a lookup
        // answers only fresh entries, so serve it rather than execute again. Only where a look costs no round
        // trip: on Redis it would add one to every miss to save the rare repeated execution.
        if snapshot.is_some()
            && self.cache.in_process()
            && let Lookup::Hit(entry) = self.cache.peek(&keys).await
        {
            return Arc::new(Computed {
                entry,
                cacheable: true,
                status: Status::Ok,
                valid: snapshot,
                tags: Tags::default(),
            });
        }
        let tracker = Arc::new(Tracker::default());
        let request = request.data(run.viewer.clone()).data(Arc::clone(&tracker));
        let executed = self.execute(request, &run, false, kept.as_deref(), Some(&tracker));
        let Some(response) = executed.await else {
            return Arc::new(self.timed_out());
        };
        let cache_control = response.cache_control();
        let max_age = self.cache.lifetime(cache_control.max_age);
        let cacheable = !response.has_errors() && max_age > 0;
        let public = cache_control.public && !tracker.viewer_dependent();
        let status = response.status();
        let entry = response.entry(max_age, public, cacheable);
        let mut tags = tracker.take_tags();
        // Not stored (errors): fresh as of the start, like any execution.
        let mut valid = snapshot.clone();
        let mut stores = None;
        if let (true, Some(snapshot)) = (cacheable, snapshot) {
            let key = if public {
                keys.public
            } else {
                // A private answer also depends on who the caller is (their role decides what they may read),
                // so a change to the caller's account, such as a promotion or demotion, must drop it too.
                if let Scope::User(id) = scope {
                    let own = crate::cache::Tag::User(id);
                    if let Err(at) = tags.binary_search(&own) {
                        tags.insert(at, own);
                    }
                }
                keys.own
            };
            stores = Some((key, snapshot));
        }
        let tags = Tags::from(tags);
        if let (Some(_), Some(verdict)) = (&stores, verdict)
            && looked_up(verdict).await.is_none()
        {
            stores = None;
        }
        if let Some((key, snapshot)) = stores {
            // Stored: checked fresh up to the store. Refused: a tag it read was purged while it ran.
            valid = self
                .cache
                .store(key, entry.clone(), Arc::clone(&tags), snapshot)
                .await;
        }
        Arc::new(Computed {
            entry,
            cacheable,
            status,
            valid,
            tags,
        })
    }

    /// Executes without the cache (mutations, cache off, unparsable documents), purging what committed writes
    /// affected before answering.
    async fn uncached(
        &self,
        request: async_graphql::Request,
        kept: Option<Arc<Kept>>,
        run: Run,
    ) -> Outcome {
        let purges = Arc::new(Purges::default());
        let request = request
            .data(run.viewer.clone())
            .data(ClientAddr(run.client))
            .data(Arc::clone(&purges));
        let response = self
            .execute(request, &run, run.parse_failed, kept.as_deref(), None)
            .await;
        // Committed even after a timeout: a mutation may have committed before the clock ran out.
        let change = purges.take();
        if !change.is_empty() {
            // A failed purge is logged, counted and retried by the cache; the write itself has succeeded.
            let _ = self.cache.commit(change).await;
        }
        self.cache.metrics().bypass.inc();
        let computed = match response {
            Some(response) => Computed {
                status: response.status(),
                entry: response.entry(0, false, false),
                cacheable: false,
                valid: None,
                tags: Tags::default(),
            },
            None => self.timed_out(),
        };
        if matches!(computed.status, Status::RateLimited { .. }) {
            self.metrics.rate_limited.inc();
        }
        computed.outcome(CacheStatus::Bypass)
    }

    fn timed_out(&self) -> Computed {
        let message = format!(
            "The request took longer than {} ms and was stopped (FOLIO_REQUEST_TIMEOUT_MS).",
            self.limits.request_timeout.as_millis()
        );
        Computed {
            entry: outcome::error_entry(Code::Timeout, &message),
            cacheable: false,
            status: Status::TimedOut,
            valid: None,
            tags: Tags::default(),
        }
    }
}

/// What `admit` found.
struct Admitted {
    kind: Option<OperationType>,
    cost: Option<u64>,
    /// The operation reads `_service { sdl }` while the schema is not public.
    private_sdl: bool,
}

/// Who runs an operation, and until when.
/// The name of the operation that runs: the request's, or else the document's only operation's.
fn operation_label<'a>(
    document: &'a async_graphql::parser::types::ExecutableDocument,
    requested: Option<&'a str>,
) -> Option<&'a str> {
    match (requested, &document.operations) {
        (Some(name), _) => Some(name),
        (None, DocumentOperations::Multiple(ops)) if ops.len() == 1 => {
            ops.keys().next().map(|n| n.as_str())
        }
        _ => None,
    }
}

#[derive(Clone)]
struct Run {
    viewer: Viewer,
    client: IpAddr,
    request_id: String,
    deadline: Instant,
    /// The document did not parse: the executor's error is a parse error.
    parse_failed: bool,
    /// The estimated cost to report in `extensions.cost` (`FOLIO_COST_EXTENSION`).
    cost: Option<u64>,
    /// A query that may read from a replica (not a mutation, not a live re-run).
    reads_replica: bool,
}

impl Computed {
    fn outcome(&self, cache: CacheStatus) -> Outcome {
        Outcome {
            entry: self.entry.clone(),
            cacheable: self.cacheable,
            status: self.status,
            cache,
            tags: Arc::clone(&self.tags),
        }
    }
}
