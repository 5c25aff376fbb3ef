//! Parsed documents of recent operations, so a repeated query is not parsed again.
//!
//! Clients send the same few operations over and over (generated from `.graphql` files), and parsing one took
//! about 6% of an uncached execution of the reference query. Each execution on the executor still gets its own
//! copy of the document, because it strips `@skip`/`@include` selections from it according to the variables; a
//! copy of the syntax tree shares its names and costs a fraction of a parse.
//!
//! Each kept document also has room for its compiled plan (`graphql/compiled`), filled once the document has
//! executed without an error.
//!
//! Only documents that parse are kept. The cache is bounded by an estimate of their size, and moka's
//! admission policy keeps frequent operations when a stream of one-off documents passes through.

use std::sync::{Arc, OnceLock};

use async_graphql::CacheControl;
use async_graphql::parser::types::ExecutableDocument;

use crate::cache::DocumentHash;
use crate::graphql::compiled::Plan;

/// How much memory the parsed documents may hold, estimated from their text (see `weight`).
const MAX_BYTES: u64 = 16 * 1024 * 1024;

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
    /// Set after the first execution without an error: the plan, or `None` when the operation does not
    /// compile (it is not tried again).
    plan: OnceLock<Option<Arc<Plan>>>,
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

    /// The compiled plan for a request naming `operation`, if there is one.
    pub fn plan(&self, operation: Option<&str>) -> Option<&Arc<Plan>> {
        self.plan
            .get()?
            .as_ref()
            .filter(|plan| plan.is_for(operation))
    }

    /// Records that `operation` executed without an error, with the executor's cache policy: compiles it
    /// unless this document has been compiled (or found not to compile) already.
    pub fn executed(&self, operation: Option<&str>, cache_control: CacheControl) {
        self.plan
            .get_or_init(|| Plan::compile(&self.document, operation, cache_control).map(Arc::new));
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
            plan: OnceLock::new(),
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
    fn weight_counts_fields_not_bytes() {
        let terse = format!("{{{}}}", "a ".repeat(1000));
        assert!(weight(&terse) as usize >= 1000 * BYTES_PER_TOKEN);
        assert!(weight("{ posts { id } }") < 2000);
    }
}
