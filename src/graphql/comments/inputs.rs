//! Inputs of the comment mutations, and the domain values they parse into (see `domain`).

use async_graphql::{ID, InputObject};

use crate::domain::{CommentBody, Fields, Invalid};
use crate::error::AppError;

#[derive(InputObject)]
pub struct AddCommentInput {
    /// The published post to comment on.
    pub post_id: ID,
    pub body: String,
}

/// A comment to add, parsed: the post's id and the body.
pub struct NewComment {
    pub post_id: i64,
    pub body: CommentBody,
}

impl TryFrom<AddCommentInput> for NewComment {
    type Error = AppError;
    fn try_from(input: AddCommentInput) -> Result<Self, AppError> {
        let mut fields = Fields::default();
        // `postId` is checked with the other fields, so one answer lists every problem.
        let post_id = fields.take(
            "postId",
            input
                .post_id
                .trim()
                .parse::<i64>()
                .map_err(|_| Invalid("must be a numeric ID".into())),
        );
        let body = fields.take("body", CommentBody::parse(input.body));
        fields.finish("add the comment", || {
            Some(NewComment {
                post_id: post_id?,
                body: body?,
            })
        })
    }
}
