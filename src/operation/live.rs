//! The pipeline's side of live data: `Pipeline::open` runs subscriptions and `@live` queries as streams.
//!
//! - `open` resolves the document and checks its limits and cost exactly as `run` does. A query without `@live`
//!   or a mutation is simply run (`Opened::Once`), so a transport can send any operation through `open`.
//! - A subscription or a live query is executed once at once (`Trigger::Start`): a subscription checks its
//!   arguments and access (an error ends it there), a live query produces its first result. Then it joins the
//!   registry group of its operation and viewer scope (`live::Registry`), which re-executes it when a change
//!   touches a tag it read.
//! - Every execution, the first and each later one, runs as the viewer *of that moment*: the scope's user is
//!   read again from the store (a demoted admin is a plain user at the next run; a deleted one ends the
//!   stream), with fresh loaders and the same resolvers, guards and error codes as any request.

use std::sync::Arc;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use futures_util::FutureExt;
use tokio::time::Instant;

use super::documents::{Kept, Parsed};
use super::execute::Executed;
use super::outcome::{Outcome, Status};
use super::{Accepts, Pipeline, Request, Run, limits};
use crate::auth::Viewer;
use crate::cache::{KeyBase, Scope, Tag, Tracker, tags};
use crate::error::Code;
use crate::graphql::context::ClientAddr;
use crate::live::registry::{Kind, Next, Runner};
use crate::live::{Emission, Execution, Finish, Membership, Trigger};

/// What `open` started.
pub enum Opened {
    /// A query or mutation (or a subscription refused before it started): one outcome.
    Once(Outcome),
    /// A subscription or live query: results until it ends or is dropped.
    Live(LiveStream),
}

/// The results of one subscription or live query. Dropping it ends the subscription.
pub struct LiveStream {
    first: Option<Emission>,
    membership: Membership,
}

impl LiveStream {
    /// The next result to send (a live query's first result first).
    pub async fn next(&mut self) -> Next {
        if let Some(first) = self.first.take() {
            return Next::Emission(Arc::new(first));
        }
        self.membership.next().await
    }
}

/// Everything needed to execute one live operation again, as any viewer of its scope.
struct Spec {
    pipeline: Pipeline,
    document: String,
    kept: Arc<Kept>,
    operation_name: Option<String>,
    variables: async_graphql::Variables,
    scope: Scope,
    kind: Kind,
    client: std::net::IpAddr,
    request_id: String,
}

/// One execution's results, before they are emissions.
struct Ran {
    /// Status and body of each result.
    results: Vec<(Status, bytes::Bytes)>,
    tags: Vec<String>,
    last: bool,
}

impl Pipeline {
    /// Runs `request` as a stream if it is a subscription or a `@live` query, otherwise once.
    pub async fn open(&self, mut resolved: Request) -> Opened {
        let document = match self.resolve(&mut resolved).await {
            Ok(document) => document,
            Err(outcome) => return Opened::Once(outcome),
        };
        let kept = match self.0.documents.get(&document) {
            Some(kept) => kept,
            None => {
                if let Err(e) = limits::check_text(&document, &self.limits) {
                    return Opened::Once(Outcome::request_error(e.code, &e.message));
                }
                match self.0.documents.parse(&document) {
                    Ok(Parsed::Fresh(doc)) => self.0.documents.keep(&document, doc),
                    Ok(Parsed::Kept(kept)) => kept,
                    // Reported in the usual shape by a plain run.
                    Err(_) => return Opened::Once(self.run_resolved(document, resolved).await),
                }
            }
        };
        let kind = match live_kind(kept.document_ref(), resolved.operation_name.as_deref()) {
            Some(kind) => kind,
            None => return Opened::Once(self.run_resolved(document, resolved).await),
        };
        if let Err(outcome) = self.admit(
            kept.document_ref(),
            resolved.operation_name.as_deref(),
            &resolved.variables,
            resolved.reveals_sdl,
        ) {
            return Opened::Once(outcome);
        }
        if kind == Kind::Subscription && resolved.accepts == Accepts::QueriesOnly {
            return Opened::Once(Outcome::not_allowed());
        }
        self.open_live(document, kept, kind, resolved).await
    }

    async fn open_live(
        &self,
        document: String,
        kept: Arc<Kept>,
        kind: Kind,
        resolved: Request,
    ) -> Opened {
        let Request {
            operation_name,
            variables,
            viewer,
            client,
            request_id,
            ..
        } = resolved;
        let scope = match &viewer {
            Viewer::Anonymous => Scope::Anonymous,
            Viewer::User { id, .. } => Scope::User(*id),
        };
        let vars = serde_json::to_vec(&variables).unwrap_or_default();
        let key = KeyBase::of(kept.hash(), operation_name.as_deref(), &vars)
            .key(&scope)
            .hex();
        let spec = Arc::new(Spec {
            pipeline: self.clone(),
            document,
            kept,
            operation_name,
            variables,
            scope,
            kind,
            client,
            request_id,
        });
        // The transport has just authenticated the viewer: the first run needs no second look.
        let first = spec.execute(Trigger::Start, Some(viewer)).await;
        let refused = first
            .results
            .iter()
            .find(|(status, _)| !matches!(status, Status::Ok))
            .or(match kind {
                // A subscription's start yields nothing unless it failed (a bad argument, a hidden post).
                Kind::Subscription => first.results.first(),
                Kind::LiveQuery => None,
            });
        if let Some((status, body)) = refused {
            return Opened::Once(Outcome::of_body(body.clone(), *status));
        }
        let runner_spec = Arc::clone(&spec);
        let joined = self
            .live
            .join(key, kind, first.tags.clone(), move || -> Runner {
                Arc::new(move |trigger| {
                    let spec = Arc::clone(&runner_spec);
                    async move { spec.execute(trigger, None).await.into_execution() }.boxed()
                })
            });
        let mut membership = match joined {
            Ok(membership) => membership,
            Err(full) => {
                return Opened::Once(Outcome::request_error(
                    Code::TooManySubscriptions,
                    &format!(
                        "This instance runs {} subscriptions and live queries already (FOLIO_LIVE_MAX_SUBSCRIPTIONS); try again later.",
                        full.0
                    ),
                ));
            }
        };
        let first = match kind {
            Kind::LiveQuery => first.results.into_iter().next().map(|(_, body)| {
                membership.sent(body.clone());
                Emission { body, last: false }
            }),
            Kind::Subscription => None,
        };
        Opened::Live(LiveStream { first, membership })
    }
}

impl Spec {
    /// Executes the operation for `trigger`, as `viewer` or, when `None`, as the scope's user read afresh.
    async fn execute(&self, trigger: Trigger, viewer: Option<Viewer>) -> Ran {
        let pipeline = &self.pipeline;
        let viewer = match viewer {
            Some(viewer) => viewer,
            None => match self.scope {
                Scope::User(id) => match pipeline.store.user_by_id(id).await {
                    Ok(Some(user)) => Viewer::User {
                        id,
                        role: user.role,
                    },
                    Ok(None) => {
                        return Ran::error(
                            Code::Unauthenticated,
                            "The account this subscription runs for no longer exists.",
                            true,
                        );
                    }
                    Err(err) => {
                        return Ran::error(err.error_code(), &err.public_message(), false);
                    }
                },
                _ => Viewer::Anonymous,
            },
        };
        let run = Run {
            viewer: viewer.clone(),
            client: self.client,
            request_id: self.request_id.clone(),
            deadline: Instant::now() + pipeline.limits.request_timeout,
            parse_failed: false,
            cost: None,
            // Woken at a commit, a re-run would nearly always find a replica behind: read the primary.
            reads_replica: false,
        };
        let tracker = Arc::new(Tracker::default());
        let finish = Arc::new(Finish::default());
        let mut request =
            async_graphql::Request::new(self.document.clone()).variables(self.variables.clone());
        request.operation_name = self.operation_name.clone();
        let request = request
            .data(viewer)
            .data(ClientAddr(self.client))
            .data(Arc::clone(&tracker))
            .data(Arc::clone(&finish))
            .data(trigger);
        let executed = match self.kind {
            Kind::LiveQuery => pipeline
                .execute(request, &run, false, Some(&self.kept), Some(&tracker))
                .await
                .map(|e| vec![e]),
            Kind::Subscription => pipeline.execute_stream(request, &run, &self.kept).await,
        };
        let Some(executed) = executed else {
            let message = format!(
                "The update took longer than {} ms and was stopped (FOLIO_REQUEST_TIMEOUT_MS).",
                pipeline.limits.request_timeout.as_millis()
            );
            return Ran::error(Code::Timeout, &message, false);
        };
        let results = executed
            .into_iter()
            .map(|e: Executed| {
                let status = e.status();
                (status, e.entry(0, false, false).body)
            })
            .collect();
        let mut tags: Vec<String> = tracker.take_tags().iter().map(Tag::name).collect();
        // A change to the viewer's account (a promotion, a demotion) re-runs what they see.
        if let Scope::User(id) = self.scope {
            tags.push(tags::user(id));
        }
        Ran {
            results,
            tags,
            last: finish.is_set(),
        }
    }
}

impl Ran {
    fn error(code: Code, message: &str, last: bool) -> Self {
        Self {
            results: vec![(
                Status::RequestError,
                crate::error::graphql_error_body(code, message).into(),
            )],
            tags: Vec::new(),
            last,
        }
    }

    fn into_execution(self) -> Execution {
        let count = self.results.len();
        let last = self.last;
        Execution {
            emissions: self
                .results
                .into_iter()
                .enumerate()
                .map(|(i, (_, body))| Emission {
                    body,
                    last: last && i + 1 == count,
                })
                .collect(),
            tags: self.tags,
        }
    }
}

/// A subscription, a query marked `@live` (unless `@live(if: false)`), or neither.
fn live_kind(document: &ExecutableDocument, operation_name: Option<&str>) -> Option<Kind> {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name)?,
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next()?,
        _ => return None,
    };
    match operation.node.ty {
        OperationType::Subscription => Some(Kind::Subscription),
        OperationType::Query => {
            let live = operation
                .node
                .directives
                .iter()
                .find(|d| d.node.name.node == "live")?;
            let off = live
                .node
                .get_argument("if")
                .is_some_and(|v| v.node.to_string() == "false");
            (!off).then_some(Kind::LiveQuery)
        }
        OperationType::Mutation => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str, name: Option<&str>) -> Option<Kind> {
        live_kind(&async_graphql::parser::parse_query(text).unwrap(), name)
    }

    #[test]
    fn live_operations_are_subscriptions_and_queries_marked_live() {
        assert_eq!(
            kind("subscription { postPublished { id } }", None),
            Some(Kind::Subscription)
        );
        assert_eq!(
            kind("query F @live { posts { totalCount } }", None),
            Some(Kind::LiveQuery)
        );
        assert_eq!(
            kind("query F @live(if: true) { me { id } }", None),
            Some(Kind::LiveQuery)
        );
        assert_eq!(kind("query F @live(if: false) { me { id } }", None), None);
        assert_eq!(kind("{ me { id } }", None), None);
        assert_eq!(kind("mutation { logout }", None), None);
        let two = "query A @live { me { id } } query B { me { id } }";
        assert_eq!(kind(two, Some("A")), Some(Kind::LiveQuery));
        assert_eq!(kind(two, Some("B")), None);
        assert_eq!(kind(two, None), None);
    }
}
