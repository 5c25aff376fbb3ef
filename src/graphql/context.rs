//! Typed access to what a resolver may use: the store, the request's loaders, the viewer, the token issuer.
//!
//! Resolvers go through `ContextExt` instead of `ctx.data_unchecked`, so a wiring mistake is an internal error
//! on one request, not a panic. Optional data (the cache's tracker, a mutation's purge list) is read with
//! `data_opt`: `data` formats an error message on every miss, which on hot fields costs real time.

use async_graphql::Context;

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::{Authenticator, Viewer};
use crate::cache::{Cache, Purges, Tag, Tracker};
use crate::error::AppError;
use crate::graphql::loaders::Loaders;
use crate::live::Event;
use crate::store::Store;

/// The client's address as the transport saw it, for per-address limits inside resolvers (`login`). Request
/// data, put there by the operation pipeline.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

pub(crate) trait ContextExt {
    fn store(&self) -> Result<&Store, AppError>;
    fn loaders(&self) -> Result<&Loaders, AppError>;
    /// The caller. Reading it marks the response as depending on who asks, so the cache keeps it under the
    /// caller's scope: call it only where the output can differ between callers.
    fn viewer(&self) -> &Viewer;
    fn auth(&self) -> Result<&Authenticator, AppError>;
    fn cache(&self) -> Result<&Cache, AppError>;
    /// Records that the response read what `tag` names (for purging).
    fn tag(&self, tag: Tag);
    /// Tags to purge once this mutation's transaction has committed (the operation pipeline purges before answering).
    fn purge_after_commit(&self, tags: Vec<String>);
    /// A row subscription fields announce, once this mutation's transaction has committed.
    fn announce_after_commit(&self, event: Event);
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
        self.data::<Arc<Authenticator>>()
            .map(|a| a.as_ref())
            .map_err(|_| {
                AppError::internal(anyhow::anyhow!("authenticator missing from schema data"))
            })
    }

    fn viewer(&self) -> &Viewer {
        static ANONYMOUS: Viewer = Viewer::Anonymous;
        if let Some(tracker) = self.data_opt::<Arc<Tracker>>() {
            tracker.mark_viewer_dependent();
        }
        self.data_opt::<Viewer>().unwrap_or(&ANONYMOUS)
    }

    fn cache(&self) -> Result<&Cache, AppError> {
        self.data::<Arc<Cache>>()
            .map(|c| c.as_ref())
            .map_err(|_| AppError::internal(anyhow::anyhow!("cache missing from schema data")))
    }

    fn tag(&self, tag: Tag) {
        if let Some(tracker) = self.data_opt::<Arc<Tracker>>() {
            tracker.tag(tag);
        }
    }

    fn purge_after_commit(&self, tags: Vec<String>) {
        if let Some(purges) = self.data_opt::<Arc<Purges>>() {
            purges.add(tags);
        }
    }

    fn announce_after_commit(&self, event: Event) {
        if let Some(purges) = self.data_opt::<Arc<Purges>>() {
            purges.announce(event);
        }
    }
}
