//! Inputs of the comment mutations, with their validation rules.

use async_graphql::{ID, InputObject};
use validator::Validate;

use crate::graphql::validation::trim;

#[derive(InputObject, Validate)]
pub struct AddCommentInput {
    /// The published post to comment on.
    #[validate(custom(function = "crate::graphql::validation::numeric_id"))]
    pub post_id: ID,
    #[validate(length(min = 1, max = 5000, message = "must be between 1 and 5000 characters"))]
    pub body: String,
}

impl AddCommentInput {
    pub fn normalized(mut self) -> Self {
        trim(&mut self.body);
        self
    }
}
