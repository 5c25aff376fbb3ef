//! `Viewer`: the caller of one request, as resolvers see it.

/// The caller. Resolvers decide visibility from this alone; they never read headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Viewer {
    /// No credentials were presented.
    #[default]
    Anonymous,
}
