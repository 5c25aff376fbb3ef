//! Inputs of the post mutations, with their validation rules. Values are trimmed before they are checked.

use async_graphql::InputObject;
use validator::Validate;

use crate::graphql::validation::trim;

#[derive(InputObject, Validate)]
pub struct CreatePostInput {
    #[validate(length(min = 5, max = 200, message = "must be between 5 and 200 characters"))]
    pub title: String,
    #[validate(length(
        min = 10,
        max = 50000,
        message = "must be between 10 and 50000 characters"
    ))]
    pub content: String,
    /// Publish at once instead of saving a draft.
    #[graphql(default = false)]
    pub published: bool,
}

impl CreatePostInput {
    pub fn normalized(mut self) -> Self {
        trim(&mut self.title);
        trim(&mut self.content);
        self
    }
}

/// The fields to change; omitted ones keep their value.
#[derive(InputObject, Validate)]
pub struct UpdatePostInput {
    #[validate(length(min = 5, max = 200, message = "must be between 5 and 200 characters"))]
    pub title: Option<String>,
    #[validate(length(
        min = 10,
        max = 50000,
        message = "must be between 10 and 50000 characters"
    ))]
    pub content: Option<String>,
}

impl UpdatePostInput {
    pub fn normalized(mut self) -> Self {
        if let Some(t) = self.title.as_mut() {
            trim(t);
        }
        if let Some(c) = self.content.as_mut() {
            trim(c);
        }
        self
    }
}
