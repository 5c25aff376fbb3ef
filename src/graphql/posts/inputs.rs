//! Inputs of the post mutations, and the domain values they parse into (see `domain`).

use async_graphql::InputObject;

use crate::domain::{Fields, PostContent, Title};
use crate::error::AppError;
use crate::store::{NewPost, PostChanges};

#[derive(InputObject)]
pub struct CreatePostInput {
    pub title: String,
    pub content: String,
    /// Publish at once instead of saving a draft.
    #[graphql(default = false)]
    pub published: bool,
}

impl TryFrom<CreatePostInput> for NewPost {
    type Error = AppError;
    fn try_from(input: CreatePostInput) -> Result<Self, AppError> {
        let mut fields = Fields::default();
        let title = fields.take("title", Title::parse(input.title));
        let content = fields.take("content", PostContent::parse(input.content));
        fields.finish("create the post", || {
            Some(NewPost {
                title: title?,
                content: content?,
                published: input.published,
            })
        })
    }
}

/// The fields to change; omitted ones keep their value.
#[derive(InputObject)]
pub struct UpdatePostInput {
    pub title: Option<String>,
    pub content: Option<String>,
}

impl TryFrom<UpdatePostInput> for PostChanges {
    type Error = AppError;
    fn try_from(input: UpdatePostInput) -> Result<Self, AppError> {
        let mut fields = Fields::default();
        let title = input.title.map(|t| fields.take("title", Title::parse(t)));
        let content = input
            .content
            .map(|c| fields.take("content", PostContent::parse(c)));
        fields.finish("update the post", || {
            Some(PostChanges {
                title: title.map(|t| t.ok_or(())).transpose().ok()?,
                content: content.map(|c| c.ok_or(())).transpose().ok()?,
            })
        })
    }
}
