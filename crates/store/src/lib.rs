//! Durable embedded key-value store (placeholder until implemented).
