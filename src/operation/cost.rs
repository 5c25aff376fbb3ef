//! Pricing an operation from the schema's own `@cost` and `@listSize` declarations (`graphql/cost.rs`), read back
//! from the subgraph SDL, the way Apollo Router's demand control and IBM's cost specification price it:
//!
//! - a field weighs its `@cost(weight:)`, else 1 if it returns an object (or interface, union), 0 for a scalar or
//!   an enum, and a mutation's root field 10;
//! - a list multiplies what one element costs (its weight and its selection) by its size: the value of its
//!   `@listSize(slicingArguments:)` argument (from the operation's literal, its variables, or the argument's
//!   default), else `assumedSize`, else `DEFAULT_LIST_SIZE`; with `sizedFields`, that size applies to those
//!   child fields instead (a connection's `edges` and `nodes`);
//! - `_entities` is as large as its `representations`; `__typename` and introspection weigh nothing;
//! - fragments count where they are spread; a selection under `@skip(if: true)` or `@include(if: false)` does
//!   not count.
//!
//! The estimate is an upper bound of the work asked for, computed before anything runs.

use std::collections::HashMap;

use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, OperationDefinition, OperationType,
    Selection, SelectionSet, ServiceDocument, TypeKind, TypeSystemDefinition,
};
use async_graphql::{Name, Positioned, Value, Variables};

/// The size of a list nothing declares a size for.
pub const DEFAULT_LIST_SIZE: u64 = 10;

/// A mutation's root field, unless it declares a weight.
const MUTATION_WEIGHT: u64 = 10;

/// Every type's fields with what pricing needs of them.
pub struct CostModel {
    types: HashMap<String, TypeCost>,
}

struct TypeCost {
    composite: bool,
    fields: HashMap<String, FieldCost>,
}

struct FieldCost {
    /// The named type the field returns (inside any list).
    ty: String,
    list: bool,
    weight: Option<u64>,
    assumed_size: Option<u64>,
    slicing: Vec<String>,
    sized_fields: Vec<String>,
    /// Argument defaults, for a slicing argument the operation leaves out.
    defaults: HashMap<String, Value>,
}

impl CostModel {
    /// Reads the declarations from `sdl` (the subgraph SDL, which carries them).
    pub fn from_sdl(sdl: &str) -> anyhow::Result<Self> {
        let doc: ServiceDocument = async_graphql::parser::parse_schema(sdl)?;
        let mut types = HashMap::new();
        for def in &doc.definitions {
            let TypeSystemDefinition::Type(ty) = def else {
                continue;
            };
            let ty = &ty.node;
            let (composite, fields) = match &ty.kind {
                TypeKind::Object(o) => (true, o.fields.as_slice()),
                TypeKind::Interface(i) => (true, i.fields.as_slice()),
                TypeKind::Union(_) => (true, [].as_slice()),
                _ => (false, [].as_slice()),
            };
            let fields = fields
                .iter()
                .map(|f| (f.node.name.node.to_string(), field_cost(&f.node)))
                .collect();
            types.insert(ty.name.node.to_string(), TypeCost { composite, fields });
        }
        // Federation's own types, which the subgraph SDL leaves to the gateway.
        types.insert(
            "_Entity".into(),
            TypeCost {
                composite: true,
                fields: HashMap::new(),
            },
        );
        types.insert(
            "_Service".into(),
            TypeCost {
                composite: true,
                fields: HashMap::new(),
            },
        );
        Ok(Self { types })
    }

    /// The estimated cost of the operation `name` (or the only one) of `doc` with `variables`; `None` when the
    /// document has no such operation (validation reports that).
    pub fn estimate(
        &self,
        doc: &ExecutableDocument,
        name: Option<&str>,
        variables: &Variables,
    ) -> Option<u64> {
        let op = operation(doc, name)?;
        let root = match op.ty {
            OperationType::Query => "Query",
            OperationType::Mutation => "Mutation",
            OperationType::Subscription => "Subscription",
        };
        let walk = Walk {
            model: self,
            doc,
            op,
            variables,
        };
        Some(walk.selection(&op.selection_set, root, None, 0))
    }
}

fn field_cost(f: &async_graphql::parser::types::FieldDefinition) -> FieldCost {
    let mut ty = &f.ty.node;
    let mut list = false;
    while let BaseType::List(inner) = &ty.base {
        list = true;
        ty = inner;
    }
    let name = match &ty.base {
        BaseType::Named(n) => n.to_string(),
        BaseType::List(_) => String::new(),
    };
    let mut cost = FieldCost {
        ty: name,
        list,
        weight: None,
        assumed_size: None,
        slicing: Vec::new(),
        sized_fields: Vec::new(),
        defaults: f
            .arguments
            .iter()
            .filter_map(|a| {
                let d = a.node.default_value.as_ref()?;
                Some((a.node.name.node.to_string(), d.node.clone()))
            })
            .collect(),
    };
    for d in &f.directives {
        let arg = |n: &str| {
            d.node
                .arguments
                .iter()
                .find(|(k, _)| k.node == n)
                .map(|(_, v)| &v.node)
        };
        match d.node.name.node.as_str() {
            "cost" => cost.weight = arg("weight").and_then(as_u64),
            "listSize" => {
                cost.assumed_size = arg("assumedSize").and_then(as_u64);
                cost.slicing = arg("slicingArguments").map(strings).unwrap_or_default();
                cost.sized_fields = arg("sizedFields").map(strings).unwrap_or_default();
            }
            _ => {}
        }
    }
    cost
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::List(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn operation<'a>(
    doc: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| &op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| &op.node)
        }
        _ => None,
    }
}

/// The deepest fragment nesting followed; validation refuses cycles, this only bounds a document that has one.
const MAX_DEPTH: usize = 64;

struct Walk<'a> {
    model: &'a CostModel,
    doc: &'a ExecutableDocument,
    op: &'a OperationDefinition,
    variables: &'a Variables,
}

impl Walk<'_> {
    /// The cost of `set` on `parent`; `sized` is the size a parent's `@listSize(sizedFields:)` gives the named
    /// children.
    fn selection(
        &self,
        set: &Positioned<SelectionSet>,
        parent: &str,
        sized: Option<(&[String], u64)>,
        depth: usize,
    ) -> u64 {
        if depth > MAX_DEPTH {
            return 0;
        }
        let mut total: u64 = 0;
        for item in &set.node.items {
            if self.skipped(item.node.directives()) {
                continue;
            }
            let cost = match &item.node {
                Selection::Field(f) => self.field(&f.node, parent, sized, depth),
                Selection::InlineFragment(frag) => {
                    let on = frag
                        .node
                        .type_condition
                        .as_ref()
                        .map_or(parent, |t| t.node.on.node.as_str());
                    self.selection(&frag.node.selection_set, on, sized, depth + 1)
                }
                Selection::FragmentSpread(spread) => {
                    match self.doc.fragments.get(&spread.node.fragment_name.node) {
                        Some(frag) => self.selection(
                            &frag.node.selection_set,
                            frag.node.type_condition.node.on.node.as_str(),
                            sized,
                            depth + 1,
                        ),
                        None => 0,
                    }
                }
            };
            total = total.saturating_add(cost);
        }
        total
    }

    fn field(
        &self,
        f: &async_graphql::parser::types::Field,
        parent: &str,
        sized: Option<(&[String], u64)>,
        depth: usize,
    ) -> u64 {
        let name = f.name.node.as_str();
        if name.starts_with("__") {
            return 0;
        }
        if parent == "Query" && name == "_entities" {
            let count = self.argument(f, "representations").map_or(1, |v| match v {
                Value::List(items) => items.len() as u64,
                _ => 1,
            });
            let each = 1 + self.selection(&f.selection_set, "_Entity", None, depth + 1);
            return count.saturating_mul(each);
        }
        let Some(info) = self
            .model
            .types
            .get(parent)
            .and_then(|t| t.fields.get(name))
        else {
            // `_service`, or a field validation will refuse.
            return 1 + self.selection(&f.selection_set, "_Service", None, depth + 1);
        };
        let composite = self.model.types.get(&info.ty).is_some_and(|t| t.composite);
        let weight = info.weight.unwrap_or(if parent == "Mutation" {
            MUTATION_WEIGHT
        } else {
            u64::from(composite)
        });
        let size = self.size(f, info);
        // A connection's size goes to its `edges` and `nodes`, not to the connection object.
        let (own, for_children) = if info.sized_fields.is_empty() {
            (size, None)
        } else {
            (None, size.map(|s| (info.sized_fields.as_slice(), s)))
        };
        let children = self.selection(&f.selection_set, &info.ty, for_children, depth + 1);
        let one = weight.saturating_add(children);
        let from_parent = sized.and_then(|(names, s)| names.iter().any(|n| n == name).then_some(s));
        match (info.list, own.or(from_parent)) {
            (true, Some(n)) => n.saturating_mul(one),
            (true, None) => DEFAULT_LIST_SIZE.saturating_mul(one),
            (false, _) => one,
        }
    }

    /// The size `@listSize` gives this field: its slicing argument's value, else its assumed size.
    fn size(&self, f: &async_graphql::parser::types::Field, info: &FieldCost) -> Option<u64> {
        let sliced = info.slicing.iter().find_map(|arg| {
            let value = self
                .argument(f, arg)
                .or_else(|| info.defaults.get(arg).cloned())?;
            match value {
                Value::Number(n) => Some(n.as_i64().map_or(0, |n| n.max(0) as u64)),
                _ => None,
            }
        });
        sliced.or(info.assumed_size)
    }

    /// An argument's value in this request: a literal, or a variable (its value, else its default).
    fn argument(&self, f: &async_graphql::parser::types::Field, name: &str) -> Option<Value> {
        let (_, value) = f.arguments.iter().find(|(n, _)| n.node == name)?;
        value
            .node
            .clone()
            .into_const_with(|var: Name| self.variable(&var).ok_or(()))
            .ok()
    }

    fn variable(&self, name: &Name) -> Option<Value> {
        if let Some(v) = self.variables.get(name) {
            return Some(v.clone());
        }
        self.op
            .variable_definitions
            .iter()
            .find(|d| d.node.name.node == *name)
            .and_then(|d| d.node.default_value.as_ref().map(|v| v.node.clone()))
    }

    /// Whether `@skip(if: true)` or `@include(if: false)` leaves the selection out.
    fn skipped(&self, directives: &[Positioned<async_graphql::parser::types::Directive>]) -> bool {
        directives.iter().any(|d| {
            let condition = d.node.get_argument("if").and_then(|v| {
                v.node
                    .clone()
                    .into_const_with(|n: Name| self.variable(&n).ok_or(()))
                    .ok()
            });
            matches!(
                (d.node.name.node.as_str(), condition),
                ("skip", Some(Value::Boolean(true))) | ("include", Some(Value::Boolean(false)))
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> CostModel {
        CostModel::from_sdl(&crate::graphql::schema::subgraph_sdl_of(
            &crate::graphql::schema::build_schema(None, crate::graphql::schema::unlimited()),
        ))
        .expect("the SDL parses")
    }

    fn cost(query: &str, variables: serde_json::Value) -> u64 {
        let doc = async_graphql::parser::parse_query(query).expect("parses");
        model()
            .estimate(&doc, None, &Variables::from_json(variables))
            .expect("an operation")
    }

    #[test]
    fn connections_cost_first_times_their_elements() {
        // posts (1) + 10 edges × (edge 1 + node 1 + author 1) + pageInfo (1); scalars are free.
        let q = "{ posts(first: 10) { edges { node { id title author { name } } } pageInfo { hasNextPage } totalCount } }";
        assert_eq!(cost(q, serde_json::json!({})), 1 + 10 * 3 + 1);
        // The same through a variable, a fragment, an alias and `__typename`.
        let q = "query($n: Int!) { feed: posts(first: $n) { __typename edges { node { ...P } } pageInfo { hasNextPage } } }
                 fragment P on Post { id author { name } }";
        assert_eq!(cost(q, serde_json::json!({ "n": 10 })), 1 + 10 * 3 + 1);
        // The argument's default (20) when the operation leaves it out.
        assert_eq!(
            cost("{ posts { nodes { id } } }", serde_json::json!({})),
            1 + 20
        );
        // Nested connections multiply.
        let q =
            "{ posts(first: 5) { nodes { comments(first: 4) { nodes { author { name } } } } } }";
        assert_eq!(cost(q, serde_json::json!({})), 1 + 5 * (1 + 1 + 4 * 2));
    }

    #[test]
    fn skipped_selections_are_free_and_mutations_weigh_more() {
        let q = "query($s: Boolean!) { posts(first: 10) @skip(if: $s) { nodes { id } } me { id } }";
        assert_eq!(cost(q, serde_json::json!({ "s": true })), 1);
        assert_eq!(cost(q, serde_json::json!({ "s": false })), 1 + 10 + 1);
        let signup = "mutation { signUp(input: { email: \"a@b.c\", name: \"A\", password: \"pppppppppppp\" }) { token user { id } } }";
        assert_eq!(cost(signup, serde_json::json!({})), 100 + 1);
        let m = "mutation { publishPost(id: 1) { id } }";
        assert_eq!(cost(m, serde_json::json!({})), 10);
        let entities = "query($r: [_Any!]!) { _entities(representations: $r) { ... on Post { id author { name } } } }";
        let reps = serde_json::json!({ "r": [{ "__typename": "Post", "id": "1" }, { "__typename": "Post", "id": "2" }] });
        assert_eq!(cost(entities, reps), 2 * (1 + 1));
    }
}
