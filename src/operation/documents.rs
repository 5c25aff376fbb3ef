//! Parsed documents of recent operations, so a repeated query is not parsed again.
//!
//! Clients send the same few operations over and over (generated from `.graphql` files), and parsing one took
//! about 6% of an uncached execution of the reference query. Each execution on the executor still gets its own
//! copy of the document, because it strips `@skip`/`@include` selections from it according to the variables; a
//! copy of the syntax tree shares its names and costs a fraction of a parse.
//!
//! Each kept document also has room for its planned reads (`graphql/compiled`), made once the document has
//! executed without an error: one per set of `@include`/`@skip` values, a few at most.
//!
//! Only documents that parse are kept. The cache is bounded by an estimate of their size, and moka's
//! admission policy keeps frequent operations when a stream of one-off documents passes through.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{CacheControl, Variables};

use crate::cache::DocumentHash;
use crate::graphql::compiled::Plan;

/// How much memory the parsed documents may hold, estimated from their text (see `weight`).
const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// How many plans (or attempts to plan) one document gets: one per `@include`/`@skip` combination it is sent
/// with, up to this.
const MAX_PLANS: usize = 4;

/// After how many lookups in a row that missed a document's next execution starts without waiting for the
/// lookup (see `Kept::misses_in_a_row`). A hit ends the run, so a document whose answers are found one time in
/// this many or more is looked up first; one that misses all the time (ids that rotate, as a post's page does)
/// pays for a wasted execution at most once per this many requests.
const SPECULATE_AFTER: u32 = 16;

/// What a syntax tree costs per token of its text, about: a name, a field node with its vectors and positions.
const BYTES_PER_TOKEN: usize = 256;

/// Recently parsed documents, by their exact text.
pub struct Documents {
    parsed: moka::sync::Cache<String, Arc<Kept>>,
}

/// A kept document (which passed the edge's limits), its cache-key hash and its compiled plan.
pub struct Kept {
    document: ExecutableDocument,
    hash: DocumentHash,
    /// Made after executions without an error, for their operation and `@include`/`@skip` values.
    plans: RwLock<Vec<Arc<Plan>>>,
    /// How many times planning was tried (at most `MAX_PLANS`; an operation that does not plan is not tried
    /// again and again).
    tried: AtomicUsize,
    /// Response-cache lookups of this document that missed since the last one that hit.
    misses: AtomicU32,
}

impl Kept {
    /// A copy of the document for the executor, which strips `@skip`/`@include` selections from its own copy.
    /// A copy shares the tree's names and costs a fraction of a parse; a compiled run needs none.
    pub fn document(&self) -> ExecutableDocument {
        self.document.clone()
    }

    /// The document itself, to inspect.
    pub fn document_ref(&self) -> &ExecutableDocument {
        &self.document
    }

    /// The document's part of a response-cache key.
    pub fn hash(&self) -> &DocumentHash {
        &self.hash
    }

    /// The plan for a request naming `operation` with `variables`, if there is one.
    pub fn plan(&self, operation: Option<&str>, variables: &Variables) -> Option<Arc<Plan>> {
        self.plans
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|plan| plan.is_for(operation, variables))
            .cloned()
    }

    /// Records whether a response-cache lookup of this document's `operation` found its answer. Only queries'
    /// misses count: a mutation is looked up (before anything tells it from a query) but never stored.
    pub fn looked_up(&self, operation: Option<&str>, hit: bool) {
        if hit {
            // Read first: the documents every request finds in the cache are not written to on every hit.
            if self.misses.load(Ordering::Relaxed) != 0 {
                self.misses.store(0, Ordering::Relaxed);
            }
        } else if self.is_query(operation) {
            let _ = self
                .misses
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
        }
    }

    /// Whether the operation a request names (or the document's only one) is a query.
    fn is_query(&self, operation: Option<&str>) -> bool {
        use async_graphql::parser::types::{DocumentOperations, OperationType};
        let kind = match (&self.document.operations, operation) {
            (DocumentOperations::Single(op), _) => Some(op.node.ty),
            (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| op.node.ty),
            (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
                ops.values().next().map(|op| op.node.ty)
            }
            _ => None,
        };
        kind == Some(OperationType::Query)
    }

    /// Whether this document's lookups have been missing for a while: its next execution may start while its
    /// lookup runs rather than after it.
    pub fn misses_in_a_row(&self) -> bool {
        self.misses.load(Ordering::Relaxed) >= SPECULATE_AFTER
    }

    /// Whether planning may still be tried for this document.
    pub fn may_plan(&self) -> bool {
        self.tried.load(Ordering::Relaxed) < MAX_PLANS
    }

    /// Records that `operation` executed with `variables` without an error, with the executor's cache policy:
    /// plans it, unless a plan already takes such a request or this document has used up its attempts.
    pub fn executed(
        &self,
        operation: Option<&str>,
        variables: &Variables,
        cache_control: CacheControl,
    ) {
        if self.plan(operation, variables).is_some()
            || self.tried.fetch_add(1, Ordering::Relaxed) >= MAX_PLANS
        {
            return;
        }
        if let Some(plan) = Plan::compile(&self.document, operation, variables, cache_control) {
            self.plans
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::new(plan));
        }
    }
}

impl Default for Documents {
    fn default() -> Self {
        Self {
            parsed: moka::sync::Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(|query: &String, _| weight(query))
                .build(),
        }
    }
}

/// The estimated size of `query`'s syntax tree. Counted by tokens rather than bytes: `{a a a ...}` is two bytes
/// of text per field but a whole field node in the tree.
fn weight(query: &str) -> u32 {
    let mut tokens = 0usize;
    let mut in_name = false;
    for b in query.bytes() {
        let name = b.is_ascii_alphanumeric() || b == b'_';
        if (name && !in_name) || b"{}()[]:$@!=".contains(&b) {
            tokens += 1;
        }
        in_name = name;
    }
    u32::try_from(query.len() + tokens.saturating_mul(BYTES_PER_TOKEN)).unwrap_or(u32::MAX)
}

/// A parsed document: one kept from an earlier request, or a fresh parse (not yet kept: see `keep`).
pub enum Parsed {
    Kept(Arc<Kept>),
    Fresh(ExecutableDocument),
}

impl Parsed {
    pub fn document(&self) -> &ExecutableDocument {
        match self {
            Parsed::Kept(kept) => &kept.document,
            Parsed::Fresh(document) => document,
        }
    }
}

impl Documents {
    /// The kept document with the text `query`, if any: it has passed the edge's limits before.
    pub fn get(&self, query: &str) -> Option<Arc<Kept>> {
        self.parsed.get(query)
    }

    /// The document `query` parses to: the kept one, or a fresh parse.
    pub fn parse(&self, query: &str) -> async_graphql::parser::Result<Parsed> {
        if let Some(kept) = self.get(query) {
            return Ok(Parsed::Kept(kept));
        }
        Ok(Parsed::Fresh(async_graphql::parser::parse_query(query)?))
    }

    /// Keeps a freshly parsed document for the next request with the same text. Called only for documents that
    /// passed the edge's limits, so refused ones take no room.
    pub fn keep(&self, query: &str, document: ExecutableDocument) -> Arc<Kept> {
        let kept = Arc::new(Kept {
            document,
            hash: DocumentHash::new(query),
            plans: RwLock::default(),
            tried: AtomicUsize::new(0),
            misses: AtomicU32::new(0),
        });
        self.parsed.insert(query.to_owned(), Arc::clone(&kept));
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_document_is_the_document_and_only_kept_ones_are_cached() {
        let docs = Documents::default();
        let query =
            "query Q($n: Int) { posts(first: $n) { edges { node { id @skip(if: true) } } } }";
        let fresh = async_graphql::parser::parse_query(query).unwrap();
        let Parsed::Fresh(first) = docs.parse(query).unwrap() else {
            panic!("nothing is kept yet");
        };
        docs.keep(query, first);
        let Parsed::Kept(again) = docs.parse(query).unwrap() else {
            panic!("kept");
        };
        assert_eq!(format!("{:?}", again.document()), format!("{fresh:?}"));
        assert!(docs.parse("{ posts {").is_err());
        assert!(matches!(docs.parse("{ other }").unwrap(), Parsed::Fresh(_)));
        docs.parsed.run_pending_tasks();
        assert_eq!(docs.parsed.entry_count(), 1);
    }

    #[test]
    fn a_run_of_misses_is_noticed_and_a_hit_ends_it() {
        let docs = Documents::default();
        let query = "query Page { post(id: 1) { title } } mutation Save { deletePost(id: 1) }";
        let kept = docs.keep(query, async_graphql::parser::parse_query(query).unwrap());
        for _ in 1..SPECULATE_AFTER {
            kept.looked_up(Some("Page"), false);
        }
        assert!(!kept.misses_in_a_row(), "one miss short");
        for _ in 0..SPECULATE_AFTER {
            kept.looked_up(Some("Save"), false);
        }
        assert!(!kept.misses_in_a_row(), "a mutation's lookups do not count");
        kept.looked_up(Some("Page"), false);
        assert!(kept.misses_in_a_row());
        kept.looked_up(Some("Page"), true);
        assert!(!kept.misses_in_a_row(), "a hit ends the run");
    }

    #[test]
    fn weight_counts_fields_not_bytes() {
        let terse = format!("{{{}}}", "a ".repeat(1000));
        assert!(weight(&terse) as usize >= 1000 * BYTES_PER_TOKEN);
        assert!(weight("{ posts { id } }") < 2000);
    }
}
