//! API server: placeholder.
