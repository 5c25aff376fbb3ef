//! Inputs of the account mutations, with their validation rules.
//!
//! Passwords are the one field never trimmed: they are secrets, and silently changing one would lock its owner
//! out the day a client stops trimming.

use async_graphql::InputObject;
use validator::Validate;

use crate::graphql::validation::trim;

#[derive(InputObject, Validate)]
pub struct SignUpInput {
    #[validate(
        email(message = "must be a valid email address"),
        length(max = 254, message = "must be at most 254 characters")
    )]
    pub email: String,
    #[validate(length(min = 1, max = 80, message = "must be between 1 and 80 characters"))]
    pub name: String,
    #[validate(length(min = 12, max = 128, message = "must be between 12 and 128 characters"))]
    pub password: String,
}

impl SignUpInput {
    /// Trimmed, with the email lower-cased (emails are stored and compared lower-case).
    pub fn normalized(mut self) -> Self {
        trim(&mut self.email);
        self.email = self.email.to_lowercase();
        trim(&mut self.name);
        self
    }
}

#[derive(InputObject, Validate)]
pub struct LoginInput {
    #[validate(length(min = 1, max = 254, message = "must be between 1 and 254 characters"))]
    pub email: String,
    /// Only bounded here: whether it is right is the login's question, answered without saying why.
    #[validate(length(min = 1, max = 128, message = "must be between 1 and 128 characters"))]
    pub password: String,
}

impl LoginInput {
    pub fn normalized(mut self) -> Self {
        trim(&mut self.email);
        self.email = self.email.to_lowercase();
        self
    }
}

#[derive(InputObject, Validate)]
pub struct UpdateProfileInput {
    #[validate(length(min = 1, max = 80, message = "must be between 1 and 80 characters"))]
    pub name: String,
}

impl UpdateProfileInput {
    pub fn normalized(mut self) -> Self {
        trim(&mut self.name);
        self
    }
}
