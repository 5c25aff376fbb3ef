//! Compiled operations: the feed query clients send over and over, answered without the general executor.
//!
//! async-graphql resolves every field of a response through a boxed future, a context and a map insert, and the
//! loaders decode every column of every row; for a page of 20 posts with their authors and 5 comments each
//! (about 600 fields) that was most of an uncached request's CPU, and two statements. A compiled operation is
//! the same query walked over a plan made once per document: one statement (`Store::feed`) that reads only the
//! columns the selection shows, and the response written straight to JSON bytes.
//!
//! What compiles is deliberately narrow, and everything else keeps running on the executor:
//! - a query whose only root field is `posts` with `first`/`after` (no `filter`: its drafts depend on the
//!   viewer), selecting the connection's `edges`/`node`/`cursor`, `nodes` and `pageInfo`;
//! - on a post: its scalar fields, `author`, `commentCount` and one `comments(first:, after:)` page (with
//!   `totalCount`); on a comment: its scalar fields and `author`; on a user: `id`, `name`, `role`,
//!   `createdAt`. These are the fields whose answer is the same for every caller;
//! - `__typename` anywhere and aliases; no fragments, no directives, no response key twice, and no other
//!   operation in the document.
//!
//! A document is compiled only after it has executed once on the executor without an error, which is what
//! validates it (async-graphql's validation is not public): from then on its variable values are the only
//! thing that can make a request invalid, and `run` checks those itself (their types, the complexity limit,
//! the pages' bounds). Whenever it is unsure (a value of an unexpected type, a cursor it cannot read, a
//! database error) it returns `None` and the request runs on the executor, which produces the error the
//! client would have seen anyway. Tests compare the two paths' answers.

mod run;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, OperationDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{CacheControl, Name, Positioned, Value};

pub use run::Output;

/// A compiled operation (see the module header).
#[derive(Debug)]
pub struct Plan {
    /// The operation name the plan was compiled for, as the request named it.
    operation: Option<String>,
    /// The response's cache policy, as the executor computed it for this document.
    cache_control: CacheControl,
    /// The response key of `posts`.
    key: String,
    /// The response keys of root `__typename` fields, and whether each comes after `posts`.
    typename: Vec<(bool, String)>,
    /// `posts`' arguments and selection.
    page: Args,
    conn: Conn<Vec<Key<PostField>>>,
    /// Which optional columns the statement reads.
    reads: Reads,
    /// The arguments of every `comments` selection on the posts (they must agree on one page).
    comment_pages: Vec<Args>,
    /// The operation's variables and the value each has when omitted (`None`: it may not be omitted).
    variables: Vec<(Name, Option<Value>)>,
}

/// A field of a selection with its response key (alias or name).
#[derive(Debug)]
struct Key<F> {
    key: String,
    field: F,
}

/// Where a `first`/`after` argument's value comes from.
#[derive(Debug, Clone)]
enum Source {
    Absent,
    Literal(Value),
    Variable(Name),
}

#[derive(Debug, Clone)]
struct Args {
    first: Source,
    after: Source,
}

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
    Author(Vec<Key<UserField>>),
    CommentCount,
    Comments(Args, Conn<Vec<Key<CommentField>>>),
}

#[derive(Debug)]
enum CommentField {
    Typename,
    Id,
    Body,
    CreatedAt,
    Author(Vec<Key<UserField>>),
}

#[derive(Debug, Clone, Copy)]
enum UserField {
    Typename,
    Id,
    Name,
    Role,
    CreatedAt,
}

impl Plan {
    /// Compiles the operation `operation` of `doc`, which has just executed without an error, with the cache
    /// policy the executor gave it. `None` when the operation is outside what compiles.
    pub fn compile(
        doc: &ExecutableDocument,
        operation: Option<&str>,
        cache_control: CacheControl,
    ) -> Option<Self> {
        if !doc.fragments.is_empty() {
            return None;
        }
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
        let mut variables = Vec::new();
        for def in &op.variable_definitions {
            if !def.node.directives.is_empty() {
                return None;
            }
            // As the executor reads an omitted variable: its default, or `null` if its type is nullable.
            let default = def.node.default_value().cloned();
            variables.push((def.node.name.node.clone(), default));
        }
        // `posts`, and `__typename` around it.
        let mut root = None;
        let mut typename = Vec::new();
        for field in fields(&op.selection_set)? {
            match field.name.node.as_str() {
                "posts" if root.is_none() => root = Some(field),
                "__typename" => typename.push((root.is_some(), leaf(field, key(field))?)),
                _ => return None,
            }
        }
        let root = root?;
        let conn = conn(&root.selection_set, post_fields)?;
        // The feed's `totalCount` is a statement of its own: left to the executor.
        if conn
            .fields
            .iter()
            .any(|f| matches!(f.field, ConnField::TotalCount))
        {
            return None;
        }
        Some(Self {
            operation: operation.map(str::to_owned),
            cache_control,
            key: key(root),
            typename,
            page: args(root)?,
            reads: Reads::of(&conn),
            comment_pages: conn
                .nodes()
                .into_iter()
                .flatten()
                .filter_map(|f| match &f.field {
                    PostField::Comments(args, _) => Some(args.clone()),
                    _ => None,
                })
                .collect(),
            conn,
            variables,
        })
    }

    /// Whether a request naming `operation` runs this plan's operation.
    pub fn is_for(&self, operation: Option<&str>) -> bool {
        self.operation.as_deref() == operation
    }

    pub fn cache_control(&self) -> CacheControl {
        self.cache_control
    }
}

/// The fields of a selection set, if it holds only plain fields (no fragments, no directives) with distinct
/// response keys.
fn fields(set: &Positioned<SelectionSet>) -> Option<Vec<&Field>> {
    let mut out: Vec<&Field> = Vec::with_capacity(set.node.items.len());
    for item in &set.node.items {
        let Selection::Field(field) = &item.node else {
            return None;
        };
        let field = &field.node;
        if !field.directives.is_empty() || out.iter().any(|f| key(f) == key(field)) {
            return None;
        }
        out.push(field);
    }
    Some(out)
}

fn key(field: &Field) -> String {
    field
        .alias
        .as_ref()
        .unwrap_or(&field.name)
        .node
        .as_str()
        .to_owned()
}

/// A field's selection, compiled by `each` field by field; `None` if any field does not compile.
fn selection<F>(
    set: &Positioned<SelectionSet>,
    each: impl Fn(&Field) -> Option<F>,
) -> Option<Vec<Key<F>>> {
    fields(set)?
        .into_iter()
        .map(|f| {
            Some(Key {
                key: key(f),
                field: each(f)?,
            })
        })
        .collect()
}

/// A leaf field: no arguments and no selection.
fn leaf<F>(field: &Field, value: F) -> Option<F> {
    (field.arguments.is_empty() && field.selection_set.node.items.is_empty()).then_some(value)
}

/// `first` and `after` of a connection field, and nothing else.
fn args(field: &Field) -> Option<Args> {
    let mut out = Args {
        first: Source::Absent,
        after: Source::Absent,
    };
    for (name, value) in &field.arguments {
        // The document has been validated, so `first` and `after` are scalars: a variable can only be the whole
        // value.
        let source = match value.node.clone().into_const_with(Err) {
            Ok(literal) => Source::Literal(literal),
            Err(variable) => Source::Variable(variable),
        };
        match name.node.as_str() {
            "first" => out.first = source,
            "after" => out.after = source,
            _ => return None,
        }
    }
    Some(out)
}

fn conn<N>(
    set: &Positioned<SelectionSet>,
    node: impl Fn(&Positioned<SelectionSet>) -> Option<N> + Copy,
) -> Option<Conn<N>> {
    let fields = selection(set, |f| match f.name.node.as_str() {
        "__typename" => leaf(f, ConnField::Typename),
        "totalCount" => leaf(f, ConnField::TotalCount),
        "nodes" if f.arguments.is_empty() => Some(ConnField::Nodes(node(&f.selection_set)?)),
        "pageInfo" if f.arguments.is_empty() => {
            Some(ConnField::PageInfo(selection(&f.selection_set, |p| {
                let field = match p.name.node.as_str() {
                    "__typename" => PageInfoField::Typename,
                    "hasNextPage" => PageInfoField::HasNextPage,
                    "hasPreviousPage" => PageInfoField::HasPreviousPage,
                    "startCursor" => PageInfoField::StartCursor,
                    "endCursor" => PageInfoField::EndCursor,
                    _ => return None,
                };
                leaf(p, field)
            })?))
        }
        "edges" if f.arguments.is_empty() => Some(ConnField::Edges(selection(
            &f.selection_set,
            |e| match e.name.node.as_str() {
                "__typename" => leaf(e, EdgeField::Typename),
                "cursor" => leaf(e, EdgeField::Cursor),
                "node" if e.arguments.is_empty() => Some(EdgeField::Node(node(&e.selection_set)?)),
                _ => None,
            },
        )?)),
        _ => None,
    })?;
    Some(Conn { fields })
}

fn user_fields(set: &Positioned<SelectionSet>) -> Option<Vec<Key<UserField>>> {
    selection(set, |f| {
        let field = match f.name.node.as_str() {
            "__typename" => UserField::Typename,
            "id" => UserField::Id,
            "name" => UserField::Name,
            "role" => UserField::Role,
            "createdAt" => UserField::CreatedAt,
            _ => return None,
        };
        leaf(f, field)
    })
}

fn comment_fields(set: &Positioned<SelectionSet>) -> Option<Vec<Key<CommentField>>> {
    selection(set, |f| match f.name.node.as_str() {
        "__typename" => leaf(f, CommentField::Typename),
        "id" => leaf(f, CommentField::Id),
        "body" => leaf(f, CommentField::Body),
        "createdAt" => leaf(f, CommentField::CreatedAt),
        "author" if f.arguments.is_empty() => {
            Some(CommentField::Author(user_fields(&f.selection_set)?))
        }
        _ => None,
    })
}

fn post_fields(set: &Positioned<SelectionSet>) -> Option<Vec<Key<PostField>>> {
    selection(set, |f| match f.name.node.as_str() {
        "__typename" => leaf(f, PostField::Typename),
        "id" => leaf(f, PostField::Id),
        "title" => leaf(f, PostField::Title),
        "content" => leaf(f, PostField::Content),
        "published" => leaf(f, PostField::Published),
        "publishedAt" => leaf(f, PostField::PublishedAt),
        "createdAt" => leaf(f, PostField::CreatedAt),
        "updatedAt" => leaf(f, PostField::UpdatedAt),
        "commentCount" => leaf(f, PostField::CommentCount),
        "author" if f.arguments.is_empty() => {
            Some(PostField::Author(user_fields(&f.selection_set)?))
        }
        "comments" => Some(PostField::Comments(
            args(f)?,
            conn(&f.selection_set, comment_fields)?,
        )),
        _ => None,
    })
}

/// Which of `Store::feed`'s optional columns a plan's selection reads (see `FeedQuery`).
#[derive(Debug, Default)]
struct Reads {
    content: bool,
    post_details: bool,
    authors: bool,
    author_details: bool,
    counts: bool,
    comment_authors: bool,
    comment_dates: bool,
}

impl Reads {
    fn of(posts: &Conn<Vec<Key<PostField>>>) -> Self {
        let mut reads = Reads::default();
        let user = |reads: &mut Reads, fields: &[Key<UserField>]| {
            reads.author_details |= fields
                .iter()
                .any(|f| matches!(f.field, UserField::Role | UserField::CreatedAt));
        };
        for post in posts.nodes() {
            for field in post {
                match &field.field {
                    PostField::Content => reads.content = true,
                    PostField::Published
                    | PostField::PublishedAt
                    | PostField::CreatedAt
                    | PostField::UpdatedAt => reads.post_details = true,
                    PostField::Author(fields) => {
                        reads.authors = true;
                        user(&mut reads, fields);
                    }
                    PostField::CommentCount => reads.counts = true,
                    PostField::Comments(_, comments) => {
                        reads.counts |= comments
                            .fields
                            .iter()
                            .any(|f| matches!(f.field, ConnField::TotalCount));
                        for comment in comments.nodes() {
                            for field in comment {
                                match &field.field {
                                    CommentField::CreatedAt => reads.comment_dates = true,
                                    CommentField::Author(fields) => {
                                        reads.comment_authors = true;
                                        user(&mut reads, fields);
                                    }
                                    _ => {}
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        reads
    }
}

impl<N> Conn<N> {
    /// The node selections of the connection (under `edges { node }` and `nodes`).
    fn nodes(&self) -> Vec<&N> {
        let mut out = Vec::new();
        for f in &self.fields {
            match &f.field {
                ConnField::Nodes(n) => out.push(n),
                ConnField::Edges(edges) => {
                    for e in edges {
                        if let EdgeField::Node(n) = &e.field {
                            out.push(n);
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}
