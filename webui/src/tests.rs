//! Tests placeholder.
