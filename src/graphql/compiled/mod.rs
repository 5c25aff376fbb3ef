//! Planned reads: the queries clients send over and over, answered without the general executor.
//!
//! async-graphql resolves every field through a boxed future, a context and a map insert, then serialises the
//! `Value` tree; for a page of 20 posts with their authors and 5 comments each (about 600 fields) that was most
//! of an uncached request's CPU. A planned read is the same query walked over a plan made once per document:
//! the rows come level by level from the same store batch functions the loaders use (one statement per
//! relation and level, fewer where a parent's statement joins its children), and the response is written
//! straight to JSON bytes (`run.rs`).
//!
//! What plans: any query whose root fields are `posts` (with `first`, `after`, `filter`), `post(id)`,
//! `user(id)` and `__typename`, over the fields `ANSWERED` declares, written with fragments, inline fragments,
//! aliases, `__typename` anywhere, and `@include`/`@skip`. A plan is made for one set of `@include`/`@skip`
//! values (a document keeps a few: see `operation::documents`). Everything else keeps running on the executor.
//!
//! Who may see what is not decided here a second time. `ANSWERED` lists every field this path may answer and
//! how its answer depends on the viewer; a field whose resolver guards it or hides it from some viewers is not
//! there (a test walks the schema and fails if a listed field answers differently for different viewers on the
//! executor), and the rows whose visibility depends on the viewer go through the resolvers' own rules
//! (`posts::visible_with`, `users::may_see_private`, `PostFilter::into_store`).
//!
//! A document is planned only after it has executed once on the executor without an error, which is what
//! validates it (async-graphql's validation is not public): from then on its variable values are the only
//! thing that can make a request invalid, and `run` checks those itself (their types, the complexity limit,
//! the pages' bounds, ids). Whenever it is unsure (a value of an unexpected type, a cursor or id it cannot
//! read, a database error) it returns `None` and the request runs on the executor, which produces the error
//! the client would have seen anyway. Tests compare the two paths' answers, tags and cache scope.

mod cost;
mod run;

use std::cell::RefCell;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, FragmentDefinition, OperationDefinition,
    OperationType, Selection, SelectionSet,
};
use async_graphql::{CacheControl, Name, Positioned, Value, Variables};

pub use run::Output;

use cost::Cost;

/// How a field's answer depends on who asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The same for every caller.
    Public,
    /// Which rows it returns depends on the viewer, decided by the resolver's own rule, named here, which the
    /// planned path calls too (and which marks the response as depending on the viewer exactly when the
    /// resolver's does).
    Rows(&'static str),
}

/// How deep fragments may nest while a document is walked. Validation refuses fragment cycles; this bound only
/// keeps a bug from recursing forever.
const MAX_NESTING: usize = 64;

/// A field the planned path may answer.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    pub ty: &'static str,
    pub field: &'static str,
    /// The type it returns, as named in the schema (without list or non-null marks).
    pub returns: &'static str,
    pub access: Access,
}

const fn public(ty: &'static str, field: &'static str, returns: &'static str) -> Answered {
    Answered {
        ty,
        field,
        returns,
        access: Access::Public,
    }
}

/// Every field the planned path answers: the planner refuses any other. The one declaration of what this path
/// may answer, walked against the schema and the executor's behaviour by the tests.
pub const ANSWERED: &[Answered] = &[
    Answered {
        ty: "Query",
        field: "posts",
        returns: "PostConnection",
        access: Access::Rows("PostFilter::into_store (drafts)"),
    },
    Answered {
        ty: "Query",
        field: "post",
        returns: "Post",
        access: Access::Rows("posts::visible_with"),
    },
    public("Query", "user", "User"),
    public("Post", "id", "ID"),
    public("Post", "title", "String"),
    public("Post", "content", "String"),
    public("Post", "published", "Boolean"),
    public("Post", "publishedAt", "DateTime"),
    public("Post", "createdAt", "DateTime"),
    public("Post", "updatedAt", "DateTime"),
    public("Post", "author", "User"),
    public("Post", "commentCount", "Int"),
    public("Post", "comments", "CommentConnection"),
    public("Comment", "id", "ID"),
    public("Comment", "body", "String"),
    public("Comment", "createdAt", "DateTime"),
    public("Comment", "author", "User"),
    public("User", "id", "ID"),
    public("User", "name", "String"),
    public("User", "role", "Role"),
    public("User", "createdAt", "DateTime"),
    Answered {
        ty: "User",
        field: "posts",
        returns: "PostConnection",
        access: Access::Rows("users::may_see_private (drafts)"),
    },
    public("PostConnection", "edges", "PostEdge"),
    public("PostConnection", "nodes", "Post"),
    public("PostConnection", "pageInfo", "PageInfo"),
    public("PostConnection", "totalCount", "Int"),
    public("PostEdge", "node", "Post"),
    public("PostEdge", "cursor", "String"),
    public("CommentConnection", "edges", "CommentEdge"),
    public("CommentConnection", "nodes", "Comment"),
    public("CommentConnection", "pageInfo", "PageInfo"),
    public("CommentConnection", "totalCount", "Int"),
    public("CommentEdge", "node", "Comment"),
    public("CommentEdge", "cursor", "String"),
    public("PageInfo", "hasNextPage", "Boolean"),
    public("PageInfo", "hasPreviousPage", "Boolean"),
    public("PageInfo", "startCursor", "String"),
    public("PageInfo", "endCursor", "String"),
];

/// The declaration of `ty.field`, if the planned path answers it.
pub fn answered(ty: &str, field: &str) -> Option<&'static Answered> {
    ANSWERED.iter().find(|a| a.ty == ty && a.field == field)
}

/// A planned operation (see the module header).
#[derive(Debug)]
pub struct Plan {
    /// The operation name the plan was made for, as the request named it.
    operation: Option<String>,
    /// The response's cache policy, as the executor computed it for this document.
    cache_control: CacheControl,
    /// The `@include`/`@skip` variables the plan was made with, and their values.
    conditions: Vec<(Name, bool)>,
    /// The operation's variables and the value each has when omitted (`None`: it may not be omitted).
    variables: Vec<(Name, Option<Value>)>,
    root: Vec<Key<RootField>>,
    /// The operation's complexity, as async-graphql's validation computes it.
    cost: Vec<Cost>,
    /// Whether any post's `content` is selected (otherwise pages of posts leave it unread).
    reads_content: bool,
}

/// A field of a selection with its response key (alias or name).
#[derive(Debug)]
struct Key<F> {
    key: String,
    field: F,
}

/// Where an argument's value comes from.
#[derive(Debug, Clone)]
enum Source {
    Absent,
    Literal(Value),
    Variable(Name),
    /// An input object with variables inside, substituted per request.
    Input(async_graphql_value::Value),
}

/// A list field's arguments.
#[derive(Debug, Clone)]
struct ListArgs {
    first: Source,
    after: Source,
    /// `posts(filter:)` only.
    filter: Source,
}

#[derive(Debug)]
enum RootField {
    Typename,
    Posts(ListArgs, Conn<PostSel>),
    Post(Source, PostSel),
    User(Source, UserSel),
}

type PostSel = Vec<Key<PostField>>;
type CommentSel = Vec<Key<CommentField>>;
type UserSel = Vec<Key<UserField>>;

/// A connection's selection; `N` is the node's selection.
#[derive(Debug)]
struct Conn<N> {
    fields: Vec<Key<ConnField<N>>>,
}

#[derive(Debug)]
enum ConnField<N> {
    Typename,
    Edges(Vec<Key<EdgeField<N>>>),
    Nodes(N),
    PageInfo(Vec<Key<PageInfoField>>),
    TotalCount,
}

#[derive(Debug)]
enum EdgeField<N> {
    Typename,
    Cursor,
    Node(N),
}

#[derive(Debug, Clone, Copy)]
enum PageInfoField {
    Typename,
    HasNextPage,
    HasPreviousPage,
    StartCursor,
    EndCursor,
}

#[derive(Debug)]
enum PostField {
    Typename,
    Id,
    Title,
    Content,
    Published,
    PublishedAt,
    CreatedAt,
    UpdatedAt,
    Author(UserSel),
    CommentCount,
    Comments(Box<(ListArgs, Conn<CommentSel>)>),
}

#[derive(Debug)]
enum CommentField {
    Typename,
    Id,
    Body,
    CreatedAt,
    Author(UserSel),
}

#[derive(Debug)]
enum UserField {
    Typename,
    Id,
    Name,
    Role,
    CreatedAt,
    Posts(Box<(ListArgs, Conn<PostSel>)>),
}

/// What planning reads besides the selection: the document's fragments, and the request's variables for
/// `@include`/`@skip` (recording which it read).
struct Cx<'d> {
    doc: &'d ExecutableDocument,
    op: &'d OperationDefinition,
    variables: &'d Variables,
    conditions: RefCell<Vec<(Name, bool)>>,
}

/// The fields one or more selection sets select on one object type: grouped by response key in the order
/// they first appear, each with every instance (fragments merged), after `@include`/`@skip`.
type Collected<'d> = Vec<(String, Vec<&'d Field>)>;

impl Plan {
    /// Plans the operation `operation` of `doc`, which has just executed with `variables` without an error,
    /// with the cache policy the executor gave it. `None` when the operation is outside what plans.
    pub fn compile(
        doc: &ExecutableDocument,
        operation: Option<&str>,
        variables: &Variables,
        cache_control: CacheControl,
    ) -> Option<Self> {
        // Only a document with one operation: async-graphql validates every operation of a document (their
        // complexity adds up, their variables must all be given), which a plan of one operation could not
        // repeat. The parser keeps a named operation in a map even when it is the only one.
        let op: &OperationDefinition = match &doc.operations {
            DocumentOperations::Single(op) => &op.node,
            DocumentOperations::Multiple(ops) if ops.len() == 1 => &ops.values().next()?.node,
            DocumentOperations::Multiple(_) => return None,
        };
        if op.ty != OperationType::Query || !op.directives.is_empty() {
            return None;
        }
        let mut defaults = Vec::new();
        for def in &op.variable_definitions {
            if !def.node.directives.is_empty() {
                return None;
            }
            // As the executor reads an omitted variable: its default, or `null` if its type is nullable.
            let default = def.node.default_value().cloned();
            defaults.push((def.node.name.node.clone(), default));
        }
        let cx = Cx {
            doc,
            op,
            variables,
            conditions: RefCell::default(),
        };
        let root = cx.root()?;
        let cost = cost::of_operation(doc, &op.selection_set.node)?;
        let reads_content = selects_content(&op.selection_set.node, doc, 0);
        Some(Self {
            operation: operation.map(str::to_owned),
            cache_control,
            conditions: cx.conditions.into_inner(),
            variables: defaults,
            root,
            cost,
            reads_content,
        })
    }

    /// Whether a request naming `operation` with `variables` runs this plan: the same operation, and the same
    /// values for the variables its `@include`/`@skip` read.
    pub fn is_for(&self, operation: Option<&str>, variables: &Variables) -> bool {
        self.operation.as_deref() == operation
            && self.conditions.iter().all(|(name, value)| {
                condition_value(variables, &self.variables, name) == Some(*value)
            })
    }

    pub fn cache_control(&self) -> CacheControl {
        self.cache_control
    }
}

/// Whether a `content` field is selected anywhere in `set` (fragments included, whatever the conditions): only
/// posts have one among the types that plan.
fn selects_content(set: &SelectionSet, doc: &ExecutableDocument, depth: usize) -> bool {
    depth < MAX_NESTING
        && set.items.iter().any(|item| match &item.node {
            Selection::Field(f) => {
                f.node.name.node == "content"
                    || selects_content(&f.node.selection_set.node, doc, depth + 1)
            }
            Selection::InlineFragment(f) => {
                selects_content(&f.node.selection_set.node, doc, depth + 1)
            }
            Selection::FragmentSpread(s) => doc
                .fragments
                .get(&s.node.fragment_name.node)
                .is_some_and(|d| selects_content(&d.node.selection_set.node, doc, depth + 1)),
        })
}

/// An argument's value: `Some(None)` when absent (the argument's default applies), `None` when the request
/// should go to the executor (a variable that may not be omitted was).
fn value(
    source: &Source,
    variables: &Variables,
    defaults: &[(Name, Option<Value>)],
) -> Option<Option<Value>> {
    match source {
        Source::Absent => Some(None),
        Source::Literal(v) => Some(Some(v.clone())),
        Source::Variable(name) => {
            if let Some(v) = variables.get(name) {
                return Some(Some(v.clone()));
            }
            let (_, default) = defaults.iter().find(|(n, _)| n == name)?;
            default.clone().map(Some)
        }
        // Every variable inside must be given or have a default; otherwise the executor decides.
        Source::Input(input) => input
            .clone()
            .into_const_with(
                |name| match value(&Source::Variable(name), variables, defaults) {
                    Some(Some(v)) => Ok(v),
                    _ => Err(()),
                },
            )
            .ok()
            .map(Some),
    }
}

/// A `Boolean` variable's value in a request: given, else its default; `None` if neither is a boolean.
fn condition_value(
    variables: &Variables,
    defaults: &[(Name, Option<Value>)],
    name: &Name,
) -> Option<bool> {
    let value = variables.get(name).cloned().or_else(|| {
        defaults
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, d)| d.clone())
    });
    match value? {
        Value::Boolean(b) => Some(b),
        _ => None,
    }
}

impl<'d> Cx<'d> {
    fn root(&self) -> Option<Vec<Key<RootField>>> {
        let mut out = Vec::new();
        for (key, fields) in self.collect(&[&self.op.selection_set.node], "Query")? {
            let field = fields[0];
            let name = field.name.node.as_str();
            if name == "__typename" {
                out.push(Key {
                    key,
                    field: leaf(field, RootField::Typename)?,
                });
                continue;
            }
            answered("Query", name)?;
            let sets = children(&fields);
            let planned = match name {
                "posts" => RootField::Posts(
                    list_args(field, true)?,
                    self.conn(&sets, "Post", |s| self.post(s))?,
                ),
                "post" => RootField::Post(id_arg(field)?, self.post(&sets)?),
                "user" => RootField::User(id_arg(field)?, self.user(&sets)?),
                _ => return None,
            };
            out.push(Key {
                key,
                field: planned,
            });
        }
        Some(out)
    }

    fn post(&self, sets: &[&'d SelectionSet]) -> Option<PostSel> {
        self.object(sets, "Post", |name, field, sets| {
            Some(match name {
                "id" => leaf(field, PostField::Id)?,
                "title" => leaf(field, PostField::Title)?,
                "content" => leaf(field, PostField::Content)?,
                "published" => leaf(field, PostField::Published)?,
                "publishedAt" => leaf(field, PostField::PublishedAt)?,
                "createdAt" => leaf(field, PostField::CreatedAt)?,
                "updatedAt" => leaf(field, PostField::UpdatedAt)?,
                "commentCount" => leaf(field, PostField::CommentCount)?,
                "author" if field.arguments.is_empty() => PostField::Author(self.user(sets)?),
                "comments" => PostField::Comments(Box::new((
                    list_args(field, false)?,
                    self.conn(sets, "Comment", |s| self.comment(s))?,
                ))),
                _ => return None,
            })
        })
    }

    fn comment(&self, sets: &[&'d SelectionSet]) -> Option<CommentSel> {
        self.object(sets, "Comment", |name, field, sets| {
            Some(match name {
                "id" => leaf(field, CommentField::Id)?,
                "body" => leaf(field, CommentField::Body)?,
                "createdAt" => leaf(field, CommentField::CreatedAt)?,
                "author" if field.arguments.is_empty() => CommentField::Author(self.user(sets)?),
                _ => return None,
            })
        })
    }

    fn user(&self, sets: &[&'d SelectionSet]) -> Option<UserSel> {
        self.object(sets, "User", |name, field, sets| {
            Some(match name {
                "id" => leaf(field, UserField::Id)?,
                "name" => leaf(field, UserField::Name)?,
                "role" => leaf(field, UserField::Role)?,
                "createdAt" => leaf(field, UserField::CreatedAt)?,
                "posts" => UserField::Posts(Box::new((
                    list_args(field, false)?,
                    self.conn(sets, "Post", |s| self.post(s))?,
                ))),
                _ => return None,
            })
        })
    }

    /// An object's selection: `__typename` as `typename`, every other field only if `ANSWERED` lists it, then
    /// as `each` plans it (given the field's name, first instance and merged sub-selections).
    fn object<F>(
        &self,
        sets: &[&'d SelectionSet],
        ty: &str,
        each: impl Fn(&str, &'d Field, &[&'d SelectionSet]) -> Option<F>,
    ) -> Option<Vec<Key<F>>>
    where
        F: TypenameField,
    {
        let mut out = Vec::new();
        for (key, fields) in self.collect(sets, ty)? {
            let field = fields[0];
            let name = field.name.node.as_str();
            let planned = if name == "__typename" {
                leaf(field, F::typename())?
            } else {
                answered(ty, name)?;
                each(name, field, &children(&fields))?
            };
            out.push(Key {
                key,
                field: planned,
            });
        }
        Some(out)
    }

    /// A connection of `node` (`Post`, `Comment`) objects.
    fn conn<N>(
        &self,
        sets: &[&'d SelectionSet],
        node: &str,
        plan_node: impl Fn(&[&'d SelectionSet]) -> Option<N> + Copy,
    ) -> Option<Conn<N>> {
        let conn_ty = format!("{node}Connection");
        let edge_ty = format!("{node}Edge");
        let mut fields = Vec::new();
        for (key, instances) in self.collect(sets, &conn_ty)? {
            let field = instances[0];
            let name = field.name.node.as_str();
            if name != "__typename" {
                answered(&conn_ty, name)?;
            }
            let sets = children(&instances);
            let planned = match name {
                "__typename" => leaf(field, ConnField::Typename)?,
                "totalCount" => leaf(field, ConnField::TotalCount)?,
                "nodes" if field.arguments.is_empty() => ConnField::Nodes(plan_node(&sets)?),
                "pageInfo" if field.arguments.is_empty() => {
                    let mut info = Vec::new();
                    for (key, instances) in self.collect(&sets, "PageInfo")? {
                        let p = instances[0];
                        let name = p.name.node.as_str();
                        if name != "__typename" {
                            answered("PageInfo", name)?;
                        }
                        let field = match name {
                            "__typename" => PageInfoField::Typename,
                            "hasNextPage" => PageInfoField::HasNextPage,
                            "hasPreviousPage" => PageInfoField::HasPreviousPage,
                            "startCursor" => PageInfoField::StartCursor,
                            "endCursor" => PageInfoField::EndCursor,
                            _ => return None,
                        };
                        info.push(Key {
                            key,
                            field: leaf(p, field)?,
                        });
                    }
                    ConnField::PageInfo(info)
                }
                "edges" if field.arguments.is_empty() => {
                    let mut edges = Vec::new();
                    for (key, instances) in self.collect(&sets, &edge_ty)? {
                        let e = instances[0];
                        let name = e.name.node.as_str();
                        if name != "__typename" {
                            answered(&edge_ty, name)?;
                        }
                        let field = match name {
                            "__typename" => leaf(e, EdgeField::Typename)?,
                            "cursor" => leaf(e, EdgeField::Cursor)?,
                            "node" if e.arguments.is_empty() => {
                                EdgeField::Node(plan_node(&children(&instances))?)
                            }
                            _ => return None,
                        };
                        edges.push(Key { key, field });
                    }
                    ConnField::Edges(edges)
                }
                _ => return None,
            };
            fields.push(Key {
                key,
                field: planned,
            });
        }
        Some(Conn { fields })
    }

    /// Collects the fields `sets` select on `ty` (see `Collected`). `None` for anything it does not know to
    /// be safe: a directive other than `@include`/`@skip`, a fragment on another type (an interface or union
    /// would need the runtime type), a condition that is not a boolean.
    fn collect(&self, sets: &[&'d SelectionSet], ty: &str) -> Option<Collected<'d>> {
        let mut out: Collected<'d> = Vec::new();
        for set in sets {
            self.collect_into(set, ty, &mut out, 0)?;
        }
        Some(out)
    }

    fn collect_into(
        &self,
        set: &'d SelectionSet,
        ty: &str,
        out: &mut Collected<'d>,
        depth: usize,
    ) -> Option<()> {
        if depth > MAX_NESTING {
            return None;
        }
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    if !self.included(&field.directives)? {
                        continue;
                    }
                    let key = field.alias.as_ref().unwrap_or(&field.name).node.as_str();
                    match out.iter_mut().find(|(k, _)| k == key) {
                        Some((_, instances)) => {
                            // Validation guarantees instances of one key can merge: the same field with the
                            // same arguments. Checked anyway, since the plan takes the first's arguments.
                            if instances[0].name.node != field.name.node
                                || !same_arguments(instances[0], field)
                            {
                                return None;
                            }
                            instances.push(field);
                        }
                        None => out.push((key.to_owned(), vec![field])),
                    }
                }
                Selection::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    if !self.included(&fragment.directives)? {
                        continue;
                    }
                    if let Some(cond) = &fragment.type_condition
                        && cond.node.on.node.as_str() != ty
                    {
                        return None;
                    }
                    self.collect_into(&fragment.selection_set.node, ty, out, depth + 1)?;
                }
                Selection::FragmentSpread(spread) => {
                    let spread = &spread.node;
                    if !self.included(&spread.directives)? {
                        continue;
                    }
                    let def: &FragmentDefinition =
                        &self.doc.fragments.get(&spread.fragment_name.node)?.node;
                    if !def.directives.is_empty() || def.type_condition.node.on.node.as_str() != ty
                    {
                        return None;
                    }
                    self.collect_into(&def.selection_set.node, ty, out, depth + 1)?;
                }
            }
        }
        Some(())
    }

    /// Whether a selection with these directives is included: `@include(if:)` and `@skip(if:)` with a literal
    /// or a variable (whose value is recorded as a condition of the plan). `None` for any other directive.
    fn included(
        &self,
        directives: &[Positioned<async_graphql::parser::types::Directive>],
    ) -> Option<bool> {
        let mut included = true;
        for directive in directives {
            let directive = &directive.node;
            let skip = match directive.name.node.as_str() {
                "include" => false,
                "skip" => true,
                _ => return None,
            };
            let [(name, value)] = directive.arguments.as_slice() else {
                return None;
            };
            if name.node.as_str() != "if" {
                return None;
            }
            let value = match value.node.clone().into_const_with(Err) {
                Ok(Value::Boolean(b)) => b,
                Ok(_) => return None,
                Err(variable) => {
                    let defaults: Vec<(Name, Option<Value>)> = self
                        .op
                        .variable_definitions
                        .iter()
                        .map(|d| (d.node.name.node.clone(), d.node.default_value().cloned()))
                        .collect();
                    let b = condition_value(self.variables, &defaults, &variable)?;
                    self.conditions.borrow_mut().push((variable, b));
                    b
                }
            };
            included &= value != skip;
        }
        Some(included)
    }
}

/// The `__typename` variant of a field enum.
trait TypenameField {
    fn typename() -> Self;
}

impl TypenameField for PostField {
    fn typename() -> Self {
        PostField::Typename
    }
}

impl TypenameField for CommentField {
    fn typename() -> Self {
        CommentField::Typename
    }
}

impl TypenameField for UserField {
    fn typename() -> Self {
        UserField::Typename
    }
}

/// The sub-selections of every instance of a field.
fn children<'d>(instances: &[&'d Field]) -> Vec<&'d SelectionSet> {
    instances.iter().map(|f| &f.selection_set.node).collect()
}

fn same_arguments(a: &Field, b: &Field) -> bool {
    a.arguments.len() == b.arguments.len()
        && a.arguments
            .iter()
            .zip(&b.arguments)
            .all(|((an, av), (bn, bv))| {
                an.node == bn.node && av.node.to_string() == bv.node.to_string()
            })
}

/// A leaf field: no arguments and no selection.
fn leaf<F>(field: &Field, value: F) -> Option<F> {
    (field.arguments.is_empty() && field.selection_set.node.items.is_empty()).then_some(value)
}

fn source(value: &Positioned<async_graphql_value::Value>) -> Source {
    // The document has been validated, so a variable in a scalar argument is the whole value.
    match value.node.clone().into_const_with(Err) {
        Ok(literal) => Source::Literal(literal),
        Err(variable) => Source::Variable(variable),
    }
}

/// `first`, `after` (and with `filter`, `filter`) of a list field, and nothing else.
fn list_args(field: &Field, filter: bool) -> Option<ListArgs> {
    let mut out = ListArgs {
        first: Source::Absent,
        after: Source::Absent,
        filter: Source::Absent,
    };
    for (name, value) in &field.arguments {
        match name.node.as_str() {
            "first" => out.first = source(value),
            "after" => out.after = source(value),
            "filter" if filter => {
                out.filter = match (value.node.clone().into_const_with(Err), &value.node) {
                    (Ok(literal), _) => Source::Literal(literal),
                    (Err(_), async_graphql_value::Value::Variable(name)) => {
                        Source::Variable(name.clone())
                    }
                    (Err(_), input) => Source::Input(input.clone()),
                };
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The `id` argument of `post` and `user`.
fn id_arg(field: &Field) -> Option<Source> {
    match field.arguments.as_slice() {
        [(name, value)] if name.node.as_str() == "id" => Some(source(value)),
        _ => None,
    }
}
