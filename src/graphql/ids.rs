//! GraphQL `ID` arguments: decimal database ids, anything else is `BAD_USER_INPUT`.

use async_graphql::ID;

use crate::error::AppError;

/// Parses an `ID` argument named `arg`.
pub fn parse(id: &ID, arg: &str) -> Result<i64, AppError> {
    id.trim().parse::<i64>().map_err(|_| {
        AppError::bad_input(format!(
            "`{arg}` must be a numeric ID, got \"{}\"",
            id.as_str()
        ))
    })
}

/// Formats a database id as a GraphQL `ID`.
pub fn id(n: i64) -> ID {
    ID(n.to_string())
}
