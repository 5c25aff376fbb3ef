//! Input validation: every input object is trimmed, then checked with the validator crate, and a failure
//! becomes one `BAD_USER_INPUT` error listing every failing field at once (the shape of Zod's
//! `flatten().fieldErrors`), keyed by the field name as the client spelled it.

use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

use crate::error::{AppError, FieldErrors};

/// Checks `input`; `action` completes "Invalid input: failed to <action>."
pub fn check(input: &impl Validate, action: &str) -> Result<(), AppError> {
    input.validate().map_err(|errors| AppError::BadUserInput {
        message: format!("Invalid input: failed to {action}."),
        field_errors: field_errors(&errors),
    })
}

fn field_errors(errors: &ValidationErrors) -> FieldErrors {
    let mut out = FieldErrors::new();
    for (field, kind) in errors.errors() {
        if let ValidationErrorsKind::Field(list) = kind {
            let messages = list
                .iter()
                .map(|e| {
                    e.message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| format!("is invalid ({})", e.code))
                })
                .collect();
            out.insert(camel_case(field), messages);
        }
    }
    out
}

/// `post_id` → `postId`: GraphQL field names, which is how async-graphql exposes Rust fields.
fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for ch in snake.chars() {
        if ch == '_' {
            upper = true;
        } else if upper {
            out.extend(ch.to_uppercase());
            upper = false;
        } else {
            out.push(ch);
        }
    }
    out
}

/// An `ID` field that must name a database row (a decimal number).
pub fn numeric_id(id: &async_graphql::ID) -> Result<(), ValidationError> {
    if id.trim().parse::<i64>().is_ok() {
        Ok(())
    } else {
        Err(ValidationError::new("id").with_message("must be a numeric ID".into()))
    }
}

/// Trims surrounding whitespace in place.
pub fn trim(s: &mut String) {
    let trimmed = s.trim();
    if trimmed.len() != s.len() {
        *s = trimmed.to_owned();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn field_names_are_camel_case() {
        assert_eq!(super::camel_case("post_id"), "postId");
        assert_eq!(super::camel_case("title"), "title");
    }
}
