//! Typed access to what a resolver may use: the store, the request's loaders, the viewer, the token issuer.
//!
//! Resolvers go through `ContextExt` instead of `ctx.data_unchecked`, so a wiring mistake is an internal error
//! on one request, not a panic.

use async_graphql::Context;

use crate::auth::{Authenticator, Viewer};
use crate::error::AppError;
use crate::graphql::loaders::Loaders;
use crate::store::Store;

pub(crate) trait ContextExt {
    fn store(&self) -> Result<&Store, AppError>;
    fn loaders(&self) -> Result<&Loaders, AppError>;
    fn viewer(&self) -> &Viewer;
    fn auth(&self) -> Result<&Authenticator, AppError>;
}

impl ContextExt for Context<'_> {
    fn store(&self) -> Result<&Store, AppError> {
        self.data::<Store>()
            .map_err(|_| AppError::internal(anyhow::anyhow!("store missing from schema data")))
    }

    fn loaders(&self) -> Result<&Loaders, AppError> {
        self.data::<Loaders>()
            .map_err(|_| AppError::internal(anyhow::anyhow!("loaders missing from request data")))
    }

    fn auth(&self) -> Result<&Authenticator, AppError> {
        self.data::<std::sync::Arc<Authenticator>>()
            .map(|a| a.as_ref())
            .map_err(|_| {
                AppError::internal(anyhow::anyhow!("authenticator missing from schema data"))
            })
    }

    fn viewer(&self) -> &Viewer {
        static ANONYMOUS: Viewer = Viewer::Anonymous;
        self.data::<Viewer>().unwrap_or(&ANONYMOUS)
    }
}
