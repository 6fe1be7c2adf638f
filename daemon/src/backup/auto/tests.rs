//! Tests of automatic backups.
