//! Document limits checked before execution, beyond async-graphql's own (depth, complexity, directives): size,
//! token count, aliases and root fields. They bound the work a single request can ask for, whatever its shape.

use async_graphql::parser::Positioned;
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};

use crate::config::EdgeConfig;

/// A document over a limit: a stable code and a message naming the setting.
#[derive(Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub code: &'static str,
    pub message: String,
}

/// Size and token count, checked on the raw text before anything else (even a cache lookup).
pub fn check_text(document: &str, edge: &EdgeConfig) -> Result<(), Exceeded> {
    if document.len() > edge.max_document_bytes {
        return Err(Exceeded {
            code: "DOCUMENT_TOO_LARGE",
            message: format!(
                "The document is larger than {} bytes (FOLIO_MAX_DOCUMENT_BYTES).",
                edge.max_document_bytes
            ),
        });
    }
    if count_tokens(document, edge.max_tokens + 1) > edge.max_tokens {
        return Err(Exceeded {
            code: "TOO_MANY_TOKENS",
            message: format!(
                "The document has more than {} tokens (FOLIO_MAX_TOKENS).",
                edge.max_tokens
            ),
        });
    }
    Ok(())
}

/// Aliases in the whole document and root fields of the operation to run, checked on the parsed document.
/// Returns the operation's type (`None` if the document names no such operation; execution reports that).
pub fn check_document(
    doc: &ExecutableDocument,
    operation_name: Option<&str>,
    edge: &EdgeConfig,
) -> Result<Option<OperationType>, Exceeded> {
    let mut aliases = 0;
    for (_, op) in doc.operations.iter() {
        aliases += count_aliases(&op.node.selection_set);
    }
    for fragment in doc.fragments.values() {
        aliases += count_aliases(&fragment.node.selection_set);
    }
    if aliases > edge.max_aliases {
        return Err(Exceeded {
            code: "TOO_MANY_ALIASES",
            message: format!(
                "The document has {aliases} aliases; at most {} are allowed (FOLIO_MAX_ALIASES).",
                edge.max_aliases
            ),
        });
    }
    let mut operations = doc.operations.iter();
    let op = match operation_name {
        Some(name) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
        None => operations.next(),
    };
    let Some((_, op)) = op else {
        return Ok(None);
    };
    if !edge.introspection && selects_introspection(&op.node.selection_set, doc, 0) {
        return Err(Exceeded {
            code: "INTROSPECTION_DISABLED",
            message: "Introspection is disabled on this server (FOLIO_INTROSPECTION).".into(),
        });
    }
    let roots = count_root_fields(&op.node.selection_set, doc, 0);
    if roots > edge.max_root_fields {
        return Err(Exceeded {
            code: "TOO_MANY_ROOT_FIELDS",
            message: format!(
                "The operation selects {roots} root fields; at most {} are allowed (FOLIO_MAX_ROOT_FIELDS).",
                edge.max_root_fields
            ),
        });
    }
    Ok(Some(op.node.ty))
}

fn count_aliases(set: &Positioned<SelectionSet>) -> usize {
    set.node
        .items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(f) => {
                usize::from(f.node.alias.is_some()) + count_aliases(&f.node.selection_set)
            }
            Selection::InlineFragment(f) => count_aliases(&f.node.selection_set),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

/// Fields at the root, looking through inline fragments and fragment spreads (depth-bounded against cycles,
/// which validation rejects anyway).
fn count_root_fields(
    set: &Positioned<SelectionSet>,
    doc: &ExecutableDocument,
    depth: usize,
) -> usize {
    if depth > 8 {
        return 0;
    }
    set.node
        .items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(f) => {
                count_root_fields(&f.node.selection_set, doc, depth + 1)
            }
            Selection::FragmentSpread(s) => doc
                .fragments
                .get(&s.node.fragment_name.node)
                .map_or(0, |f| {
                    count_root_fields(&f.node.selection_set, doc, depth + 1)
                }),
        })
        .sum()
}

/// Whether the operation asks for `__schema` or `__type` at its root (`__typename` is not introspection of the
/// schema and stays allowed).
fn selects_introspection(
    set: &Positioned<SelectionSet>,
    doc: &ExecutableDocument,
    depth: usize,
) -> bool {
    if depth > 8 {
        return false;
    }
    set.node.items.iter().any(|item| match &item.node {
        Selection::Field(f) => matches!(f.node.name.node.as_str(), "__schema" | "__type"),
        Selection::InlineFragment(f) => {
            selects_introspection(&f.node.selection_set, doc, depth + 1)
        }
        Selection::FragmentSpread(s) => doc
            .fragments
            .get(&s.node.fragment_name.node)
            .is_some_and(|f| selects_introspection(&f.node.selection_set, doc, depth + 1)),
    })
}

/// Lexical tokens (punctuators, names, numbers, strings), counting no further than `stop`.
fn count_tokens(document: &str, stop: usize) -> usize {
    let bytes = document.as_bytes();
    let mut i = 0;
    let mut tokens = 0;
    while i < bytes.len() && tokens < stop {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' | 0xef | 0xbb | 0xbf => i += 1,
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                tokens += 1;
                if bytes[i..].starts_with(b"\"\"\"") {
                    i += 3;
                    while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                        i += if bytes[i..].starts_with(b"\\\"\"\"") {
                            4
                        } else {
                            1
                        };
                    }
                    i += 3;
                } else {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
            }
            b'.' if bytes[i..].starts_with(b"...") => {
                tokens += 1;
                i += 3;
            }
            _ if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' => {
                tokens += 1;
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || matches!(bytes[i], b'_' | b'.' | b'+' | b'-'))
                {
                    i += 1;
                }
            }
            _ => {
                tokens += 1;
                i += 1;
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::count_tokens;

    #[test]
    fn tokens_are_counted_like_the_lexer_sees_them() {
        assert_eq!(count_tokens("{ posts(first: 20) { id } }", 100), 11);
        assert_eq!(count_tokens("query Q($a: Int = -1.5e3) { a }", 100), 13);
        assert_eq!(
            count_tokens("{ a(s: \"x y, z\") # comment\n ...F }", 100),
            10
        );
        assert_eq!(count_tokens("{ a }".repeat(1000).as_str(), 10), 10);
    }
}
