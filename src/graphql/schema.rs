//! Builds the schema: merged query, mutation and subscription roots, the `@live` directive, limits, and the SDL
//! that `schema.graphql` (the subgraph) and `subscriptions.graphql` (what only WebSocket and SSE serve) mirror.

use std::borrow::Cow;
use std::sync::Arc;

use async_graphql::parser::types::Directive;
use async_graphql::registry::{MetaDirective, MetaInputValue, Registry};
use async_graphql::{
    ContextDirective, CustomDirective, CustomDirectiveFactory, MergedObject, MergedSubscription,
    SDLExportOptions, Schema, ServerResult,
};

use crate::auth::Authenticator;
use crate::cache::Cache;
use crate::graphql::cache::CacheMutation;
use crate::graphql::comments::{CommentMutation, CommentSubscription};
use crate::graphql::entities::EntityQuery;
use crate::graphql::posts::{PostMutation, PostQuery, PostSubscription};
use crate::graphql::users::{UserMutation, UserQuery};
use crate::ratelimit::{Rate, RateLimiter};
use crate::store::Store;

/// Every query field, merged from the domain folders. Named `Query`, as clients and federation gateways expect.
// `EntityQuery` adds no field of its own: it is the federation entity resolvers behind `_entities`.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct QueryRoot(UserQuery, PostQuery, EntityQuery);

/// Every mutation, merged from the domain folders.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct MutationRoot(UserMutation, PostMutation, CommentMutation, CacheMutation);

/// Every subscription, merged from the domain folders. Served over WebSocket and SSE only (`http::live`), and not
/// part of the subgraph SDL: federation gateways route subscriptions separately.
#[derive(MergedSubscription, Default)]
#[graphql(name = "Subscription")]
pub struct SubscriptionRoot(PostSubscription, CommentSubscription);

pub type FolioSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// `directive @live(if: Boolean = true) on QUERY`: the graphql-live-query convention. A query operation marked
/// `@live` over WebSocket or SSE is kept running (see `operation::live`); the executor itself ignores it, so
/// declaring it (for validation and introspection) is all the schema does. The subgraph SDL leaves it out.
struct LiveDirective;

/// Never created: the executor applies custom directives to fields only, and `@live` is allowed on queries only.
struct LiveNoop;

impl CustomDirective for LiveNoop {}

impl CustomDirectiveFactory for LiveDirective {
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("live")
    }

    fn register(&self, registry: &mut Registry) {
        let mut args = async_graphql::indexmap::IndexMap::new();
        args.insert(
            "if".to_owned(),
            MetaInputValue {
                name: "if".to_owned(),
                description: Some("Keep the query live; `false` runs it once.".to_owned()),
                ty: "Boolean".to_owned(),
                deprecation: async_graphql::registry::Deprecation::NoDeprecated,
                default_value: Some("true".to_owned()),
                visible: None,
                inaccessible: false,
                tags: Vec::new(),
                is_secret: false,
                directive_invocations: Vec::new(),
            },
        );
        registry.add_directive(MetaDirective {
            name: "live".to_owned(),
            description: Some(
                "Keeps a query running over WebSocket or SSE: its result is sent again whenever it changes."
                    .to_owned(),
            ),
            locations: vec![async_graphql::registry::__DirectiveLocation::QUERY],
            args,
            is_repeatable: false,
            visible: None,
            composable: None,
        });
    }

    fn create(
        &self,
        _ctx: &ContextDirective<'_>,
        _directive: &Directive,
    ) -> ServerResult<Box<dyn CustomDirective>> {
        Ok(Box::new(LiveNoop))
    }
}

/// What resolvers reach through the schema: the store, the token issuer and the cache. Absent only for printing
/// the SDL.
pub struct SchemaData {
    pub store: Store,
    pub auth: Arc<Authenticator>,
    pub cache: Arc<Cache>,
    pub login_limits: LoginLimits,
}

/// How often `login` and `signUp` may be tried (see `users::mutation` for the scheme).
#[derive(Clone)]
pub struct LoginLimits {
    pub limiter: Arc<RateLimiter>,
    /// One email from one client address (guessing one account's password from one place).
    pub per_email_address: Rate,
    /// One client address over all emails (trying many accounts from one place).
    pub per_address: Rate,
    /// One email from every address it has not signed in from, together (guessing from many places). Slower;
    /// addresses the account has signed in from within `known_for` are exempt, so it cannot lock the owner out.
    pub per_email_unknown: Rate,
    pub known_for: std::time::Duration,
    /// `signUp` per client address; `None`: no limit.
    pub signups: Option<Rate>,
}

/// Static limits applied to every operation before it runs.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_depth: usize,
    pub max_complexity: usize,
    pub max_directives: usize,
    /// Serve `__schema` / `__type` (off in production unless `FOLIO_INTROSPECTION=true`).
    pub introspection: bool,
    /// "Did you mean ...?" in validation errors, which would leak field names when introspection is off.
    pub suggestions: bool,
}

/// The schema, with the store and authenticator as schema-wide data.
pub fn build_schema(data: Option<SchemaData>, limits: Limits) -> FolioSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot::default(),
    )
    .directive(LiveDirective)
    .limit_depth(limits.max_depth)
    .limit_complexity(limits.max_complexity)
    .limit_directives(limits.max_directives)
    // A Federation 2 subgraph: `_service { sdl }` and `_entities` (see `entities.rs`).
    .enable_federation();
    if !limits.introspection {
        builder = builder.disable_introspection();
    }
    if !limits.suggestions {
        builder = builder.disable_suggestions();
    }
    if let Some(data) = data {
        builder = builder
            .data(data.store)
            .data(data.auth)
            .data(data.cache)
            .data(data.login_limits);
    }
    builder.finish()
}

/// The schema definition as `folio schema` prints it, `schema.graphql` holds it and `GET /schema.graphql` serves
/// it: the Federation 2 subgraph SDL (`_service { sdl }`: `@key` on the entities, the `@link` to the federation
/// spec), followed by the definitions of the federation directives it imports.
///
/// `_service { sdl }` leaves those definitions out, as subgraph SDLs usually do, because gateways and composition
/// know them from the `@link`. Tools that read the file as a plain GraphQL schema (code generators,
/// `graphql-js`'s `buildSchema`) do not, and reject an undefined directive; with the definitions appended the file
/// is a complete schema for them, and still composes (the definitions are the spec's own).
pub fn sdl() -> String {
    sdl_of(&build_schema(None, unlimited()))
}

/// `subscriptions.graphql`: what clients reach over WebSocket and SSE besides the subgraph schema: the
/// `Subscription` type and the `@live` directive. Code generators read it together with `schema.graphql`.
pub fn subscriptions_sdl() -> String {
    let full = build_schema(None, unlimited()).sdl_with_options(SDLExportOptions::new());
    let mut out = String::from(
        "# Subscriptions and @live queries, served over WebSocket (graphql-transport-ws) and SSE (graphql-sse) at\n\
         # /graphql. Not part of the subgraph schema (schema.graphql): federation gateways route subscriptions\n\
         # separately. Read both files together for code generation.\n",
    );
    let mut keep = false;
    for line in full.lines() {
        if line.starts_with("directive @live") {
            out.push('\n');
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if line.starts_with("type Subscription ") {
            keep = true;
            out.push('\n');
        }
        if keep {
            out.push_str(line);
            out.push('\n');
            if line == "}" {
                keep = false;
            }
        }
    }
    out
}

/// No limits (for printing the schema and checking documents against it).
pub fn unlimited() -> Limits {
    Limits {
        max_depth: usize::MAX,
        max_complexity: usize::MAX,
        max_directives: usize::MAX,
        introspection: true,
        suggestions: true,
    }
}

/// `sdl()` of a built schema (the server serves its own at `GET /schema.graphql`).
pub fn sdl_of(schema: &FolioSchema) -> String {
    let mut sdl = subgraph_sdl_of(schema);
    sdl.push_str(FEDERATION_DEFINITIONS);
    sdl
}

/// The SDL a federation gateway reads from `_service { sdl }` (see `ServiceSdl`).
pub fn subgraph_sdl_of(schema: &FolioSchema) -> String {
    linked_sdl(&printed_sdl(schema))
}

/// The subgraph SDL as async-graphql prints it, with the options its `_service` resolver uses.
fn printed_sdl(schema: &FolioSchema) -> String {
    schema.sdl_with_options(SDLExportOptions::new().federation().compose_directive())
}

/// The Federation version the subgraph links: 2.9, the first whose spec has `@cost` and `@listSize`.
pub const FEDERATION_URL: &str = "https://specs.apollo.dev/federation/v2.9";

/// The directives Folio imports from the federation spec beyond the ones async-graphql imports itself.
const COST_DIRECTIVES: [&str; 2] = ["cost", "listSize"];

/// async-graphql's federation SDL links Federation v2.5 and prints the definition of every directive it knows.
/// The demand-control directives (`graphql/cost.rs`) belong to Federation v2.9: this raises the link, imports
/// them, and leaves their definitions to the spec, so composition carries them into the supergraph for the
/// gateway's demand control (a subgraph-local `@cost` would be dropped there).
fn linked_sdl(printed: &str) -> String {
    let mut out = String::with_capacity(printed.len() + 64);
    for line in without_live(printed).lines() {
        let defines_cost = COST_DIRECTIVES.iter().any(|name| {
            line.strip_prefix("directive @")
                .and_then(|rest| rest.strip_prefix(name))
                .is_some_and(|rest| rest.starts_with('(') || rest.starts_with(' '))
        });
        if defines_cost {
            continue;
        }
        if line.contains("url: \"https://specs.apollo.dev/federation/v2.") {
            out.push_str(&format!("\turl: \"{FEDERATION_URL}\","));
        } else if line.trim_start().starts_with("import: [\"@key\"") {
            let imports: String = COST_DIRECTIVES
                .iter()
                .map(|d| format!(", \"@{d}\""))
                .collect();
            out.push_str(&line.replacen(']', &format!("{imports}]"), 1));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// `printed` without the `@live` definition (and its description): like subscriptions, live queries are served
/// by Folio itself, not through a gateway, and an executable directive only one subgraph declares makes
/// composition warn. It is in `subscriptions.graphql` instead.
fn without_live(printed: &str) -> String {
    let mut out = String::with_capacity(printed.len());
    let mut pending = String::new();
    let mut in_description = false;
    for line in printed.lines() {
        if line == "\"\"\"" && !in_description && pending.is_empty() {
            in_description = true;
            pending.push_str(line);
            pending.push('\n');
            continue;
        }
        if in_description {
            pending.push_str(line);
            pending.push('\n');
            if line == "\"\"\"" {
                in_description = false;
            }
            continue;
        }
        if line.starts_with("directive @live") {
            pending.clear();
            continue;
        }
        out.push_str(&pending);
        pending.clear();
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&pending);
    out
}

/// async-graphql answers `_service { sdl }` itself, with the SDL as it prints it; the operation pipeline puts
/// the linked SDL (`subgraph_sdl_of`) in its place, so gateways read what `schema.graphql` holds.
pub struct ServiceSdl {
    printed: String,
    linked: String,
}

impl ServiceSdl {
    pub fn of(schema: &FolioSchema) -> Self {
        let printed = printed_sdl(schema);
        let linked = linked_sdl(&printed);
        Self { printed, linked }
    }

    /// Replaces the printed SDL wherever a root field's object holds it (`_service { sdl }`, under any alias).
    /// A length check first: nothing else in a response is this string.
    pub fn fix(&self, data: &mut async_graphql::Value) {
        let async_graphql::Value::Object(root) = data else {
            return;
        };
        for value in root.values_mut() {
            if let async_graphql::Value::Object(fields) = value {
                for field in fields.values_mut() {
                    if let async_graphql::Value::String(s) = field
                        && s.len() == self.printed.len()
                        && *s == self.printed
                    {
                        *s = self.linked.clone();
                    }
                }
            }
        }
    }
}

/// The definitions of `@link` and of every directive the subgraph SDL imports from the federation spec (with the
/// scalars and enum they use), as Federation v2.9 declares them. A test checks that each imported directive is
/// defined here.
pub const FEDERATION_DEFINITIONS: &str = r#"# Federation 2 directive definitions (https://specs.apollo.dev/federation/v2.9), for tools that read this SDL
# as a plain GraphQL schema. Gateways and composition know them already; `_service { sdl }` leaves them out.
directive @link(url: String, as: String, for: link__Purpose, import: [link__Import]) repeatable on SCHEMA
directive @key(fields: federation__FieldSet!, resolvable: Boolean = true) repeatable on OBJECT | INTERFACE
directive @tag(name: String!) repeatable on FIELD_DEFINITION | OBJECT | INTERFACE | UNION | ARGUMENT_DEFINITION | SCALAR | ENUM | ENUM_VALUE | INPUT_OBJECT | INPUT_FIELD_DEFINITION | SCHEMA
directive @shareable repeatable on OBJECT | FIELD_DEFINITION
directive @inaccessible on FIELD_DEFINITION | OBJECT | INTERFACE | UNION | ARGUMENT_DEFINITION | SCALAR | ENUM | ENUM_VALUE | INPUT_OBJECT | INPUT_FIELD_DEFINITION
directive @override(from: String!) on FIELD_DEFINITION
directive @external(reason: String) on OBJECT | FIELD_DEFINITION
directive @provides(fields: federation__FieldSet!) on FIELD_DEFINITION
directive @requires(fields: federation__FieldSet!) on FIELD_DEFINITION
directive @composeDirective(name: String) repeatable on SCHEMA
directive @interfaceObject on OBJECT
directive @requiresScopes(scopes: [[federation__Scope!]!]!) on FIELD_DEFINITION | OBJECT | INTERFACE | SCALAR | ENUM
directive @cost(weight: Int!) on ARGUMENT_DEFINITION | ENUM | FIELD_DEFINITION | INPUT_FIELD_DEFINITION | OBJECT | SCALAR
directive @listSize(assumedSize: Int, slicingArguments: [String!], sizedFields: [String!], requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION
scalar link__Import
enum link__Purpose {
	SECURITY
	EXECUTION
}
scalar federation__FieldSet
scalar federation__Scope
"#;
