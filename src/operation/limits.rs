//! Document limits checked before execution, beyond async-graphql's own (depth, complexity, directives): size,
//! token count, aliases and root fields. They bound the work a single request can ask for, whatever its shape.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::Positioned;
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};

use crate::config::EdgeConfig;
use crate::error::Code;

/// A document over a limit: a stable code and a message naming the setting.
#[derive(Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub code: Code,
    pub message: String,
}

/// Size and token count, checked on the raw text before anything else (even a cache lookup).
pub(crate) fn check_text(document: &str, edge: &EdgeConfig) -> Result<(), Exceeded> {
    if document.len() > edge.max_document_bytes {
        return Err(Exceeded {
            code: Code::DocumentTooLarge,
            message: format!(
                "The document is larger than {} bytes (FOLIO_MAX_DOCUMENT_BYTES).",
                edge.max_document_bytes
            ),
        });
    }
    if count_tokens(document, edge.max_tokens + 1) > edge.max_tokens {
        return Err(Exceeded {
            code: Code::TooManyTokens,
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
pub(crate) fn check_document(
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
            code: Code::TooManyAliases,
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
    if !edge.introspection
        && selects_introspection(&op.node.selection_set, doc, &mut HashSet::new())
    {
        return Err(Exceeded {
            code: Code::IntrospectionDisabled,
            message: "Introspection is disabled on this server (FOLIO_INTROSPECTION).".into(),
        });
    }
    // Fragments can multiply a small document into an enormous one (a fragment spread 100 times by one spread
    // 100 times ...), which every later pass (async-graphql's validation included) would walk in full.
    let expanded = count_fields(&op.node.selection_set, doc, true, &mut HashMap::new());
    if expanded > MAX_EXPANDED_FIELDS {
        return Err(Exceeded {
            code: Code::TooManyFields,
            message: format!(
                "With its fragments expanded the operation selects more than {MAX_EXPANDED_FIELDS} fields."
            ),
        });
    }
    let roots = count_fields(&op.node.selection_set, doc, false, &mut HashMap::new());
    if roots > edge.max_root_fields {
        return Err(Exceeded {
            code: Code::TooManyRootFields,
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

/// The most fields an operation may select once its fragments are expanded (not counting list sizes: that is
/// what complexity measures). Real documents stay in the hundreds.
pub const MAX_EXPANDED_FIELDS: usize = 10_000;

/// Fields in a selection set with its fragments expanded: only at this level (`deep: false`, the root fields)
/// or at every level (`deep: true`). Each fragment is counted once and remembered, so a fragment spread k times
/// by a fragment spread k times ... costs one visit per fragment, not k^depth. `memo` must be fresh per `deep`.
fn count_fields<'a>(
    set: &'a Positioned<SelectionSet>,
    doc: &'a ExecutableDocument,
    deep: bool,
    memo: &mut HashMap<&'a str, usize>,
) -> usize {
    set.node.items.iter().fold(0usize, |total, item| {
        let n = match &item.node {
            Selection::Field(f) if deep => {
                1usize.saturating_add(count_fields(&f.node.selection_set, doc, deep, memo))
            }
            Selection::Field(_) => 1,
            Selection::InlineFragment(f) => count_fields(&f.node.selection_set, doc, deep, memo),
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.as_str();
                match memo.get(name) {
                    Some(n) => *n,
                    None => {
                        // 0 while counting: a cycle (which validation rejects anyway) ends here.
                        memo.insert(name, 0);
                        let n = doc
                            .fragments
                            .get(&s.node.fragment_name.node)
                            .map_or(0, |f| count_fields(&f.node.selection_set, doc, deep, memo));
                        memo.insert(name, n);
                        n
                    }
                }
            }
        };
        total.saturating_add(n)
    })
}

/// Whether the operation asks for `__schema` or `__type` at its root (`__typename` is not introspection of the
/// schema and stays allowed).
fn selects_introspection<'a>(
    set: &'a Positioned<SelectionSet>,
    doc: &'a ExecutableDocument,
    seen: &mut HashSet<&'a str>,
) -> bool {
    selects_root(set, doc, seen, &["__schema", "__type"])
}

/// Whether the operation `operation_name` names selects `_service` (the federation SDL) at its root.
pub(crate) fn selects_sdl(doc: &ExecutableDocument, operation_name: Option<&str>) -> bool {
    let mut operations = doc.operations.iter();
    let op = match operation_name {
        Some(name) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
        None => operations.next(),
    };
    op.is_some_and(|(_, op)| {
        selects_root(
            &op.node.selection_set,
            doc,
            &mut HashSet::new(),
            &["_service"],
        )
    })
}

/// Whether a root field named in `names` is selected, through any fragments. Each fragment is looked into once.
fn selects_root<'a>(
    set: &'a Positioned<SelectionSet>,
    doc: &'a ExecutableDocument,
    seen: &mut HashSet<&'a str>,
    names: &[&str],
) -> bool {
    set.node.items.iter().any(|item| match &item.node {
        Selection::Field(f) => names.contains(&f.node.name.node.as_str()),
        Selection::InlineFragment(f) => selects_root(&f.node.selection_set, doc, seen, names),
        Selection::FragmentSpread(s) => {
            seen.insert(s.node.fragment_name.node.as_str())
                && doc
                    .fragments
                    .get(&s.node.fragment_name.node)
                    .is_some_and(|f| selects_root(&f.node.selection_set, doc, seen, names))
        }
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
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
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
                    while i < bytes.len()
                        && bytes[i] != b'"'
                        && bytes[i] != b'\n'
                        && bytes[i] != b'\r'
                    {
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

/// The spec's variable coercion for the built-in scalars, before validation: a variable whose value does not fit
/// its declared type (a string or a fraction for an `Int`, an integer beyond 32 bits, a missing required one) is
/// the client's value at fault, `BAD_USER_INPUT`, as GraphQL servers commonly answer it. Input objects, enums
/// and custom scalars are left to the executor.
pub(crate) fn coerce_variables(
    doc: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &async_graphql::Variables,
) -> Result<(), Exceeded> {
    let mut operations = doc.operations.iter();
    let op = match operation_name {
        Some(name) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
        None => operations.next(),
    };
    let Some((_, op)) = op else {
        return Ok(());
    };
    for definition in &op.node.variable_definitions {
        let name = &definition.node.name.node;
        let ty = &definition.node.var_type.node;
        let refuse = |why: String| Exceeded {
            code: Code::BadUserInput,
            message: format!("Variable \"${name}\" got an invalid value: {why}."),
        };
        match variables.get(name) {
            None if !ty.nullable && definition.node.default_value.is_none() => {
                return Err(refuse(format!(
                    "it is required ({ty}) but was not provided"
                )));
            }
            None => {}
            Some(value) => fits(value, ty).map_err(refuse)?,
        }
    }
    Ok(())
}

/// Whether `value` fits `ty`, for the built-in scalars (anything else is the executor's to check).
fn fits(
    value: &async_graphql::Value,
    ty: &async_graphql::parser::types::Type,
) -> Result<(), String> {
    use async_graphql::Value;
    use async_graphql::parser::types::BaseType;
    if matches!(value, Value::Null) {
        return if ty.nullable {
            Ok(())
        } else {
            Err(format!("null where {ty} is required"))
        };
    }
    match &ty.base {
        BaseType::List(inner) => match value {
            Value::List(items) => items.iter().try_for_each(|item| fits(item, inner)),
            // A single value stands for a list of one.
            other => fits(other, inner),
        },
        BaseType::Named(name) => {
            let ok = match (name.as_str(), value) {
                ("Int", Value::Number(n)) => n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                ("Float", Value::Number(_)) => true,
                ("String", Value::String(_)) => true,
                ("Boolean", Value::Boolean(_)) => true,
                ("ID", Value::String(_)) => true,
                ("ID", Value::Number(n)) => n.is_i64() || n.is_u64(),
                ("Int" | "Float" | "String" | "Boolean" | "ID", _) => false,
                _ => true,
            };
            if ok {
                Ok(())
            } else {
                Err(format!("{value} is not a valid {name}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::count_tokens;
    use crate::error::Code;

    #[test]
    fn fragment_bombs_are_measured_without_expanding_them() {
        // Nine fragments, each spreading the next one 50 times: 50^8 fields if expanded naively.
        let mut doc = String::from("query { ...F0 }\n");
        for i in 0..9 {
            let body = if i == 8 {
                "__typename".to_owned()
            } else {
                format!("...F{} ", i + 1).repeat(50)
            };
            doc.push_str(&format!("fragment F{i} on Query {{ {body} }}\n"));
        }
        let parsed = async_graphql::parser::parse_query(&doc).expect("parses");
        let edge = crate::Config::default().edge;
        let started = std::time::Instant::now();
        let err = super::check_document(&parsed, None, &edge).expect_err("refused");
        assert_eq!(err.code, Code::TooManyFields);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn a_carriage_return_ends_a_comment() {
        assert_eq!(count_tokens("{ a #x\r b }", 100), 4);
    }

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
