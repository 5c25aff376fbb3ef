//! The cache domain of the schema: the admin-only explicit purge (the seed's `revalidateTag`).

mod mutation;

pub use mutation::CacheMutation;

use crate::error::{AppError, FieldErrors};

/// Most tags one explicit purge may name.
pub const MAX_PURGE_TAGS: usize = 1000;

/// Checks the tags of an explicit purge (GraphQL or HTTP): 1 to 1,000 non-blank tags of at most 200 characters.
pub fn check_purge_tags(tags: &[String]) -> Result<(), AppError> {
    let problem = if tags.is_empty() {
        Some("must name at least one tag".to_owned())
    } else if tags.len() > MAX_PURGE_TAGS {
        Some(format!("may name at most {MAX_PURGE_TAGS} tags"))
    } else if tags
        .iter()
        .any(|t| t.trim().is_empty() || t.chars().count() > 200)
    {
        Some("each tag must be 1 to 200 characters, e.g. `Post:7` or `Post:list`".to_owned())
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(message) => {
            let mut field_errors = FieldErrors::new();
            field_errors.insert("tags".into(), vec![message]);
            Err(AppError::BadUserInput {
                message: "Invalid input: failed to purge the cache.".into(),
                field_errors,
            })
        }
    }
}
