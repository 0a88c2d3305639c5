//! Kubernetes semantics without IO: the resource registry, object metadata helpers,
//! label and field selectors, validation, defaulting, patches and table columns.

pub mod resources;

pub use resources::{lookup, lookup_kind, Resource, RESOURCES};
