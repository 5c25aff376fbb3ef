//! Who is asking: the `Viewer` a request runs as.

mod viewer;

pub use viewer::Viewer;
