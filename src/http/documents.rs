//! Parsed documents of recent operations, so a repeated query is not parsed again.
//!
//! Clients send the same few operations over and over (generated from `.graphql` files), and parsing one took
//! about 6% of an uncached execution of the reference query. Each request still gets its own copy of the
//! document, because execution strips `@skip`/`@include` selections from it according to the variables; a
//! copy of the syntax tree shares its names and costs a fraction of a parse.
//!
//! Only documents that parse are kept. The cache is bounded by an estimate of their size, and moka's
//! admission policy keeps frequent operations when a stream of one-off documents passes through.

use std::sync::Arc;

use async_graphql::parser::types::ExecutableDocument;

/// How much memory the parsed documents may hold, estimated from their text (see `weight`).
const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// A syntax tree is several times larger than its text.
const TREE_PER_TEXT_BYTE: usize = 8;

/// Recently parsed documents, by their exact text.
pub struct Documents {
    parsed: moka::sync::Cache<String, Arc<ExecutableDocument>>,
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

fn weight(query: &str) -> u32 {
    u32::try_from(query.len().saturating_mul(TREE_PER_TEXT_BYTE)).unwrap_or(u32::MAX)
}

impl Documents {
    /// The document `query` parses to: a copy of the cached tree, or a fresh parse (cached when it succeeds).
    pub fn parse(&self, query: &str) -> async_graphql::parser::Result<ExecutableDocument> {
        if let Some(doc) = self.parsed.get(query) {
            return Ok(ExecutableDocument::clone(&doc));
        }
        let doc = async_graphql::parser::parse_query(query)?;
        self.parsed.insert(query.to_owned(), Arc::new(doc.clone()));
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_document_is_the_document_and_errors_are_not_kept() {
        let docs = Documents::default();
        let query =
            "query Q($n: Int) { posts(first: $n) { edges { node { id @skip(if: true) } } } }";
        let fresh = async_graphql::parser::parse_query(query).unwrap();
        for _ in 0..2 {
            let doc = docs.parse(query).unwrap();
            assert_eq!(format!("{doc:?}"), format!("{fresh:?}"));
        }
        assert!(docs.parse("{ posts {").is_err());
        assert!(docs.parse("{ posts {").is_err());
        docs.parsed.run_pending_tasks();
        assert_eq!(docs.parsed.entry_count(), 1);
    }
}
