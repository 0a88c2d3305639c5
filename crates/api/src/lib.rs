//! Kubernetes semantics without IO: the resource registry, object metadata helpers,
//! label and field selectors, validation, defaulting, patches, OpenAPI documents and
//! table columns.

pub mod addons;
pub mod admission;
pub mod defaults;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod resources;
pub mod selectors;
pub mod table;
pub mod validation;

pub use resources::{lookup, lookup_kind, Resource, RESOURCES};
pub mod protobuf;
