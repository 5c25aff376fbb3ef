//! Validated domain values: the text a client writes into Folio, each with the one constructor that checks it.
//!
//! The store's write types (`CreatePost`, `PostChanges`, `CreateComment`, `CreateAccount`, ...) take these
//! values, not `String`s, so text that was not trimmed and checked cannot reach SQL: there is no `check` call
//! to forget. The GraphQL inputs turn into them with `TryFrom` (see each domain's `inputs.rs`), collecting every
//! failing field into one `BAD_USER_INPUT` with `fieldErrors`.

use validator::{ValidateEmail, ValidateLength};

use crate::error::{AppError, FieldErrors};

/// Why a value was refused, as the client reads it in `fieldErrors`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

/// Checks that `value` has between `min` and `max` characters.
fn length(value: &str, min: u64, max: u64) -> Result<(), Invalid> {
    if value.validate_length(Some(min), Some(max), None) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "must be between {min} and {max} characters"
        )))
    }
}

fn trimmed(raw: String) -> String {
    let t = raw.trim();
    if t.len() == raw.len() {
        raw
    } else {
        t.to_owned()
    }
}

/// Refuses what no text field may hold: the NUL character, which PostgreSQL cannot store (SQLite could, so
/// allowing it would make the two backends differ), and, in a single-line field, any other control character.
pub fn storable(value: &str, single_line: bool) -> Result<(), Invalid> {
    if value.contains('\0') {
        return Err(Invalid("must not contain the NUL character".into()));
    }
    if single_line && value.chars().any(char::is_control) {
        return Err(Invalid(
            "must not contain control characters (line breaks, tabs, ...)".into(),
        ));
    }
    Ok(())
}

/// Declares a trimmed text value with length bounds in characters (`single_line`: no control characters).
macro_rules! bounded_text {
    ($(#[$doc:meta])* $name:ident, $min:expr, $max:expr, $single_line:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// Trims `raw` and checks its length and characters.
            pub fn parse(raw: String) -> Result<Self, Invalid> {
                let value = trimmed(raw);
                length(&value, $min, $max)?;
                storable(&value, $single_line)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

bounded_text!(
    /// A post's title: 5 to 200 characters.
    Title,
    5,
    200,
    true
);
bounded_text!(
    /// A post's body: 10 to 50,000 characters.
    PostContent,
    10,
    50_000,
    false
);
bounded_text!(
    /// A comment's body: 1 to 5,000 characters.
    CommentBody,
    1,
    5_000,
    false
);
bounded_text!(
    /// A user's display name: 1 to 80 characters.
    DisplayName,
    1,
    80,
    true
);

/// An email address: trimmed, lower-cased (emails are stored and compared lower-case), well-formed, at most 254
/// characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: String) -> Result<Self, Vec<Invalid>> {
        let value = raw.trim().to_lowercase();
        let mut problems = Vec::new();
        if !value.validate_email() || value.chars().any(char::is_control) {
            problems.push(Invalid("must be a valid email address".into()));
        }
        if !value.validate_length(None, Some(254), None) {
            problems.push(Invalid("must be at most 254 characters".into()));
        }
        if problems.is_empty() {
            Ok(Self(value))
        } else {
            Err(problems)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new password: 12 to 128 characters, never trimmed (it is a secret: silently changing one would lock its
/// owner out the day a client stops trimming).
pub struct NewPassword(String);

impl NewPassword {
    pub fn parse(raw: String) -> Result<Self, Invalid> {
        length(&raw, 12, 128)?;
        if raw.contains('\0') {
            return Err(Invalid("must not contain the NUL character".into()));
        }
        Ok(Self(raw))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Collects the fields of one input that fail, so a client learns every problem in one answer.
#[derive(Default)]
pub struct Fields(FieldErrors);

impl Fields {
    /// `value` if it parsed; otherwise records why under `field` (the name as the client spells it).
    pub fn take<T>(&mut self, field: &str, value: Result<T, Invalid>) -> Option<T> {
        self.take_all(field, value.map_err(|e| vec![e]))
    }

    /// Like `take`, for a value that can fail several rules at once.
    pub fn take_all<T>(&mut self, field: &str, value: Result<T, Vec<Invalid>>) -> Option<T> {
        match value {
            Ok(v) => Some(v),
            Err(problems) => {
                self.0
                    .entry(field.to_owned())
                    .or_default()
                    .extend(problems.into_iter().map(|Invalid(m)| m));
                None
            }
        }
    }

    /// The parsed input, or one `BAD_USER_INPUT` listing every failing field; `action` completes "Invalid input:
    /// failed to <action>." `build` runs only when every field parsed.
    pub fn finish<T>(self, action: &str, build: impl FnOnce() -> Option<T>) -> Result<T, AppError> {
        let invalid = |field_errors| AppError::BadUserInput {
            message: format!("Invalid input: failed to {action}."),
            field_errors,
        };
        if !self.0.is_empty() {
            return Err(invalid(self.0));
        }
        build().ok_or_else(|| invalid(FieldErrors::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_trimmed_and_bounded_in_characters() {
        assert_eq!(Title::parse("  Hello  ".into()).unwrap().as_str(), "Hello");
        assert!(Title::parse("  Hell  ".into()).is_err());
        // 200 characters of four bytes each: within bounds, counted as characters.
        assert!(Title::parse("𝄞".repeat(200)).is_ok());
        assert!(Title::parse("𝄞".repeat(201)).is_err());
        assert!(DisplayName::parse("   ".into()).is_err());
        assert!(CommentBody::parse("x".into()).is_ok());
    }

    #[test]
    fn emails_are_lower_cased_and_passwords_left_alone() {
        assert_eq!(
            Email::parse(" Dana@Example.COM ".into()).unwrap().as_str(),
            "dana@example.com"
        );
        assert!(Email::parse("@".into()).is_err());
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(long).unwrap_err().len(), 2);
        assert_eq!(
            NewPassword::parse("  twelve chars ".into())
                .ok()
                .map(NewPassword::into_inner)
                .as_deref(),
            Some("  twelve chars ")
        );
        assert!(NewPassword::parse("p".repeat(11)).is_err());
    }

    #[test]
    fn every_failing_field_is_reported_at_once() {
        let mut fields = Fields::default();
        let title = fields.take("title", Title::parse("x".into()));
        let body = fields.take("body", CommentBody::parse("ok".into()));
        let err = fields
            .finish("write", || Some((title?, body?)))
            .unwrap_err();
        let AppError::BadUserInput {
            message,
            field_errors,
        } = err
        else {
            panic!("BAD_USER_INPUT");
        };
        assert_eq!(message, "Invalid input: failed to write.");
        assert_eq!(field_errors.keys().collect::<Vec<_>>(), ["title"]);
    }
}
