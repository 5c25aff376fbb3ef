//! Inputs of the account mutations, and the domain values they parse into (see `domain`).

use async_graphql::InputObject;

use crate::domain::{DisplayName, Email, Fields, Invalid, NewPassword};
use crate::error::AppError;

#[derive(InputObject)]
pub struct SignUpInput {
    pub email: String,
    pub name: String,
    pub password: String,
}

/// A sign-up, parsed.
pub struct SignUp {
    pub email: Email,
    pub name: DisplayName,
    pub password: NewPassword,
}

impl TryFrom<SignUpInput> for SignUp {
    type Error = AppError;
    fn try_from(input: SignUpInput) -> Result<Self, AppError> {
        let mut fields = Fields::default();
        let email = fields.take_all("email", Email::parse(input.email));
        let name = fields.take("name", DisplayName::parse(input.name));
        let password = fields.take("password", NewPassword::parse(input.password));
        fields.finish("sign up", || {
            Some(SignUp {
                email: email?,
                name: name?,
                password: password?,
            })
        })
    }
}

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    /// Only bounded here: whether it is right is the login's question, answered without saying why.
    pub password: String,
}

/// A login attempt, parsed: the email trimmed and lower-cased (not checked for form: a malformed one simply
/// matches no account), both bounded.
pub struct Credentials {
    pub email: String,
    pub password: String,
}

impl TryFrom<LoginInput> for Credentials {
    type Error = AppError;
    fn try_from(input: LoginInput) -> Result<Self, AppError> {
        let bounded = |value: String, max: u64| {
            let count = value.chars().count() as u64;
            if !(1..=max).contains(&count) {
                Err(Invalid(format!("must be between 1 and {max} characters")))
            } else if value.contains('\0') {
                // No account can have it; refused before it reaches SQL (PostgreSQL cannot take it).
                Err(Invalid("must not contain the NUL character".into()))
            } else {
                Ok(value)
            }
        };
        let mut fields = Fields::default();
        let email = fields.take("email", bounded(input.email.trim().to_lowercase(), 254));
        let password = fields.take("password", bounded(input.password, 128));
        fields.finish("log in", || {
            Some(Credentials {
                email: email?,
                password: password?,
            })
        })
    }
}

#[derive(InputObject)]
pub struct UpdateProfileInput {
    pub name: String,
}

impl TryFrom<UpdateProfileInput> for DisplayName {
    type Error = AppError;
    fn try_from(input: UpdateProfileInput) -> Result<Self, AppError> {
        let mut fields = Fields::default();
        let name = fields.take("name", DisplayName::parse(input.name));
        fields.finish("update the profile", || name)
    }
}
