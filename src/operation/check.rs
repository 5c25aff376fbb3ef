//! `folio documents check`: the persisted documents a client build ships, checked before they deploy.
//!
//! Each manifest document is validated against a schema (the running build's, or a `schema.graphql` about to
//! ship, so a schema change that breaks a client shows up in that client's CI), priced with the schema's own
//! `@cost`/`@listSize` (`cost`), measured for depth, and held against the limits this configuration would apply
//! (`limits`, `FOLIO_MAX_DEPTH`, `FOLIO_MAX_COST`). Validation is apollo-compiler's, which implements the
//! GraphQL specification's rules; async-graphql's own validation is not public.

use std::collections::HashSet;

use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Schema};
use async_graphql::Positioned;
use async_graphql::Variables;
use async_graphql::parser::types::{ExecutableDocument as Parsed, Selection, SelectionSet};

use super::cost::CostModel;
use super::limits;
use super::persisted::Manifest;
use crate::config::Config;

/// One document's verdict.
#[derive(Debug)]
pub struct Checked {
    pub id: String,
    pub name: String,
    /// Estimated with the variables' defaults (and lists at their declared or assumed size).
    pub cost: Option<u64>,
    pub depth: usize,
    /// Empty when the document would run; otherwise why not.
    pub problems: Vec<String>,
}

/// Checks every document of `manifest` against the SDL `sdl` and the limits of `config`.
pub fn check(manifest: &Manifest, sdl: &str, config: &Config) -> anyhow::Result<Vec<Checked>> {
    let schema = match Schema::parse_and_validate(sdl, "schema.graphql") {
        Ok(schema) => schema,
        Err(with_errors) => anyhow::bail!("the schema is not valid:\n{}", with_errors.errors),
    };
    let costs = CostModel::from_sdl(sdl)?;
    Ok(manifest
        .documents()
        .iter()
        .map(|(id, text)| check_one(&schema, &costs, config, id.clone(), text))
        .collect())
}

fn check_one(
    schema: &Valid<Schema>,
    costs: &CostModel,
    config: &Config,
    id: String,
    text: &str,
) -> Checked {
    let mut problems = Vec::new();
    if let Err(errors) = ExecutableDocument::parse_and_validate(schema, text, "document.graphql") {
        for diagnostic in errors.errors.iter() {
            problems.push(format!("invalid: {}", diagnostic.error));
        }
    }
    if let Err(e) = limits::check_text(text, &config.edge) {
        problems.push(format!("refused: {} ({})", e.message, e.code));
    }
    let Ok(parsed) = async_graphql::parser::parse_query(text) else {
        return Checked {
            id,
            name: String::new(),
            cost: None,
            depth: 0,
            problems,
        };
    };
    let name = parsed
        .operations
        .iter()
        .filter_map(|(name, _)| name.map(|n| n.to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    if let Err(e) = limits::check_document(&parsed, None, &config.edge) {
        problems.push(format!("refused: {} ({})", e.message, e.code));
    }
    let cost = costs.estimate(&parsed, None, &Variables::default());
    if let (Some(cost), Some(max)) = (cost, config.documents.max_cost)
        && cost > max
    {
        problems.push(format!(
            "refused: estimated cost {cost} is over {max} (FOLIO_MAX_COST)"
        ));
    }
    let depth = parsed
        .operations
        .iter()
        .map(|(_, op)| depth_of(&op.node.selection_set, &parsed, &mut HashSet::new()))
        .max()
        .unwrap_or(0);
    if depth > config.max_depth {
        problems.push(format!(
            "refused: depth {depth} is over {} (FOLIO_MAX_DEPTH)",
            config.max_depth
        ));
    }
    Checked {
        id,
        name,
        cost,
        depth,
        problems,
    }
}

/// Nesting depth as async-graphql counts it: each field one level, fragments expanded where spread.
fn depth_of<'a>(
    set: &'a Positioned<SelectionSet>,
    doc: &'a Parsed,
    visiting: &mut HashSet<&'a str>,
) -> usize {
    set.node
        .items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(f) if f.node.selection_set.node.items.is_empty() => 1,
            Selection::Field(f) => 1 + depth_of(&f.node.selection_set, doc, visiting),
            Selection::InlineFragment(f) => depth_of(&f.node.selection_set, doc, visiting),
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.as_str();
                match doc.fragments.get(&s.node.fragment_name.node) {
                    Some(frag) if visiting.insert(name) => {
                        let d = depth_of(&frag.node.selection_set, doc, visiting);
                        visiting.remove(name);
                        d
                    }
                    _ => 0,
                }
            }
        })
        .max()
        .unwrap_or(0)
}

/// The table `folio documents check` prints.
pub fn table(checked: &[Checked]) -> String {
    let mut out = format!(
        "{:<28} {:<18} {:>8} {:>6}  {}\n",
        "operation", "id", "cost", "depth", "verdict"
    );
    for c in checked {
        let id: String = c.id.chars().take(16).collect();
        let cost = c.cost.map_or("-".to_owned(), |c| c.to_string());
        let verdict = if c.problems.is_empty() {
            "ok".to_owned()
        } else {
            c.problems.join("; ")
        };
        out.push_str(&format!(
            "{:<28} {:<18} {:>8} {:>6}  {}\n",
            if c.name.is_empty() {
                "(anonymous)"
            } else {
                &c.name
            },
            id,
            cost,
            c.depth,
            verdict
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(docs: &[&str]) -> Manifest {
        let json: serde_json::Map<String, serde_json::Value> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                (
                    format!("doc-{i}"),
                    serde_json::Value::String((*d).to_owned()),
                )
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        std::fs::write(&path, serde_json::Value::Object(json).to_string()).unwrap();
        Manifest::load(&[path]).unwrap()
    }

    #[test]
    fn valid_invalid_and_over_limit_documents_are_told_apart() {
        let sdl = crate::graphql::schema::sdl();
        let mut config = Config::default();
        config.documents.max_cost = Some(50);
        let checked = check(
            &manifest(&[
                "query Feed { posts(first: 10) { nodes { id author { name } } } }",
                "query Broken { posts { nodes { nope } } }",
                "query Big { posts(first: 100) { nodes { id author { name } } } }",
            ]),
            &sdl,
            &config,
        )
        .unwrap();
        let by_name = |n: &str| checked.iter().find(|c| c.name == n).unwrap();
        assert!(by_name("Feed").problems.is_empty(), "{:?}", by_name("Feed"));
        assert_eq!(by_name("Feed").cost, Some(1 + 10 * 2));
        assert_eq!(by_name("Feed").depth, 4);
        assert!(
            by_name("Broken").problems[0].starts_with("invalid:"),
            "{:?}",
            by_name("Broken")
        );
        assert!(by_name("Big").problems[0].contains("FOLIO_MAX_COST"));
        // A schema without `Post.author`: the feed document breaks.
        let changed = sdl.replace("\tauthor: User!\n", "");
        let checked = check(
            &manifest(&["query Feed { posts { nodes { author { name } } } }"]),
            &changed,
            &config,
        )
        .unwrap();
        assert!(
            checked[0].problems[0].starts_with("invalid:"),
            "{checked:?}"
        );
        assert!(table(&checked).contains("Feed"));
    }
}
