//! Cluster lab: placeholder.
