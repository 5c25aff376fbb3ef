//! `Viewer`: the caller of one request, as resolvers see it.

use crate::error::AppError;
use crate::store::Role;

/// The caller. Resolvers decide visibility from this alone; they never read headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Viewer {
    /// No credentials were presented.
    #[default]
    Anonymous,
    /// A verified token named this user. `role` is read from the database for this request, not taken from the
    /// token, so a demotion takes effect on the next request.
    User { id: i64, role: Role },
}

impl Viewer {
    /// The signed-in user's id.
    pub fn user_id(&self) -> Option<i64> {
        match self {
            Self::Anonymous => None,
            Self::User { id, .. } => Some(*id),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Self::User {
                role: Role::Admin,
                ..
            }
        )
    }

    /// Whether the viewer may see what only `owner` and admins may see (their email, plan, drafts).
    pub fn owns_or_admin(&self, owner: i64) -> bool {
        self.user_id() == Some(owner) || self.is_admin()
    }

    /// The signed-in user's id, or `UNAUTHENTICATED`.
    pub fn require_user(&self) -> Result<i64, AppError> {
        self.user_id()
            .ok_or_else(|| AppError::Unauthenticated("You must be signed in to do this.".into()))
    }
}
