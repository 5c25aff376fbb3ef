//! Demand-control declarations: `@cost` and `@listSize`, as Apollo Federation's demand control and IBM's GraphQL
//! cost directive specification define them.
//!
//! They are applied on the resolvers (`#[graphql(directive = ...)]`), printed in the SDL (`schema.graphql` and
//! `_service { sdl }`, imported from Federation v2.9 so a gateway such as Apollo Router prices operations the
//! same way), and read back from that SDL by `operation::cost`, which prices every operation Folio runs. One
//! declaration, every reader.
//!
//! What is declared: every connection's size is its `first` argument, applied to its `edges` and `nodes`
//! (`@listSize(slicingArguments: ["first"], sizedFields: ["edges", "nodes"])`, applied on each connection field
//! as `list_size::apply(None, by_first(), edges_and_nodes())`: async-graphql takes only an `apply` call there); `signUp` and `login` hash a password with Argon2 and weigh `PASSWORD_WEIGHT`. Everything
//! else has the specification's default weight: 1 for an object, 0 for a scalar or an enum, 10 for a mutation.

use async_graphql::TypeDirective;

// The weight of a field (`@cost(weight:)`). No doc comment on the directive functions: async-graphql would print it as the directive's description, and
// the definitions must stay the specification's own.
#[TypeDirective(name = "cost", location = "FieldDefinition")]
pub fn cost(weight: i32) {}

#[TypeDirective(name = "listSize", location = "FieldDefinition")]
pub fn list_size(
    assumed_size: Option<i32>,
    slicing_arguments: Option<Vec<String>>,
    sized_fields: Option<Vec<String>>,
) {
}

/// A password hash (Argon2, tens of milliseconds of CPU) costs as much as this many objects.
pub const PASSWORD_WEIGHT: i32 = 100;

/// A connection's slicing argument.
pub fn by_first() -> Option<Vec<String>> {
    Some(vec!["first".to_owned()])
}

/// A connection's sized fields.
pub fn edges_and_nodes() -> Option<Vec<String>> {
    Some(vec!["edges".to_owned(), "nodes".to_owned()])
}
