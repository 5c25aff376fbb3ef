//! A planned operation's complexity, as async-graphql's validation computes it, so a planned run refuses (by
//! leaving the request to the executor) exactly what the executor would refuse as too complex.
//!
//! The validator walks the document as written: every instance of a field counts, fragments are walked where
//! they are spread, `@include`/`@skip` are not applied, and `__typename` is free. A field costs one plus its
//! children, a connection `first.clamp(1, 100)` times its children (`connection::complexity`). Only the
//! connections' `first` can depend on the request, so the walk is done once and evaluated per request.

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Value, Variables};

use super::{Source, answered, source};
use crate::graphql::connection;

/// The cost of one field instance.
#[derive(Debug)]
pub(super) struct Cost {
    /// A connection's `first` (its cost is then `complexity(first, children)`).
    first: Option<Source>,
    children: Vec<Cost>,
}

/// The cost tree of an operation's root selection. `None` if it selects something `ANSWERED` does not list.
pub(super) fn of_operation(doc: &ExecutableDocument, root: &SelectionSet) -> Option<Vec<Cost>> {
    let mut out = Vec::new();
    walk(doc, root, "Query", &mut out, 0)?;
    Some(out)
}

fn walk(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    ty: &str,
    out: &mut Vec<Cost>,
    depth: usize,
) -> Option<()> {
    if depth > super::MAX_NESTING {
        return None;
    }
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => {
                let field = &field.node;
                if field.name.node == "__typename" {
                    continue;
                }
                let declared = answered(ty, field.name.node.as_str())?;
                let mut children = Vec::new();
                walk(
                    doc,
                    &field.selection_set.node,
                    declared.returns,
                    &mut children,
                    depth + 1,
                )?;
                let first = declared.returns.ends_with("Connection").then(|| {
                    field
                        .arguments
                        .iter()
                        .find(|(n, _)| n.node == "first")
                        .map_or(Source::Absent, |(_, v)| source(v))
                });
                out.push(Cost { first, children });
            }
            Selection::InlineFragment(fragment) => {
                walk(doc, &fragment.node.selection_set.node, ty, out, depth + 1)?;
            }
            Selection::FragmentSpread(spread) => {
                let def = &doc.fragments.get(&spread.node.fragment_name.node)?.node;
                walk(doc, &def.selection_set.node, ty, out, depth + 1)?;
            }
        }
    }
    Some(())
}

/// The total complexity for a request's variables (`defaults` for omitted ones). `None` when a `first` is not
/// an integer: the executor decides about such a request.
pub(super) fn evaluate(
    costs: &[Cost],
    variables: &Variables,
    defaults: &[(Name, Option<Value>)],
) -> Option<usize> {
    let mut total = 0usize;
    for cost in costs {
        let children = evaluate(&cost.children, variables, defaults)?;
        total = total.saturating_add(match &cost.first {
            None => 1 + children,
            Some(first) => {
                let first = match super::value(first, variables, defaults)? {
                    None => 20,
                    Some(Value::Number(n)) => i32::try_from(n.as_i64()?).ok()?,
                    Some(_) => return None,
                };
                connection::complexity(first, children)
            }
        });
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use async_graphql::{CacheControl, Request};
    use serde_json::json;

    use super::*;
    use crate::graphql::compiled::Plan;
    use crate::graphql::{Limits, build_schema};

    /// The complexity async-graphql's validation computes for `query`: the smallest limit it accepts it under.
    async fn executor_complexity(query: &str, variables: &serde_json::Value) -> usize {
        let accepts = |limit: usize| async move {
            let schema = build_schema(
                None,
                Limits {
                    max_depth: usize::MAX,
                    max_complexity: limit,
                    max_directives: usize::MAX,
                    introspection: true,
                    suggestions: true,
                },
            );
            let request = Request::new(query).variables(Variables::from_json(variables.clone()));
            let response = schema.execute(request).await;
            !response
                .errors
                .iter()
                .any(|e| e.message.contains("too complex"))
        };
        let (mut low, mut high) = (1, 1_000_000);
        assert!(accepts(high).await, "{query}");
        while low < high {
            let mid = (low + high) / 2;
            if accepts(mid).await {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        low
    }

    #[tokio::test]
    async fn complexity_is_the_executors() {
        let cases = [
            (
                "query($n: Int!) { posts(first: $n) { edges { node { id title author { name } commentCount
                 comments(first: 5) { edges { node { body author { name } } } } } } pageInfo { hasNextPage endCursor } } }",
                json!({ "n": 20 }),
            ),
            (
                "query($n: Int!) { posts(first: $n) { edges { node { id } } } }",
                json!({ "n": 0 }),
            ),
            (
                "query($c: Int) { __typename posts { __typename edges { __typename cursor node { __typename id
                 writer: author { __typename id name role createdAt } comments(first: $c) { __typename totalCount
                 pageInfo { __typename hasNextPage hasPreviousPage startCursor endCursor }
                 edges { cursor node { __typename id body createdAt author { id } } } nodes { id } } } }
                 nodes { id t: title } pageInfo { hasNextPage } } after: __typename }",
                json!({ "c": 7 }),
            ),
            // Fragments count where they are spread, every instance of a field counts, and skipped fields too.
            (
                "query($id: ID!, $b: Boolean!, $n: Int = 3) { post(id: $id) { ...P ...P title @skip(if: $b) }
                 user(id: $id) { posts(first: $n) { totalCount nodes { ...P } } ... on User { name } } }
                 fragment P on Post { id title comments(first: 4) { nodes { id author { name } } } }",
                json!({ "id": "1", "b": true }),
            ),
        ];
        for (query, variables) in cases {
            let doc = async_graphql::parser::parse_query(query).expect("parses");
            let variables = Variables::from_json(variables.clone());
            let plan = Plan::compile(&doc, None, &variables, CacheControl::default())
                .unwrap_or_else(|| panic!("plans: {query}"));
            let ours = evaluate(&plan.cost, &variables, &plan.variables).expect("evaluates");
            let json = variables.into_value().into_json().expect("JSON");
            assert_eq!(ours, executor_complexity(query, &json).await, "{query}");
        }
    }
}
