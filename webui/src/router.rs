//! Routes of the admin pages. STUB: being written.

use std::sync::Arc;

use axum::Router;

use crate::Backend;

/// All admin pages under `/admin` (full paths), for the daemon to mount.
pub fn router<B: Backend>(backend: Arc<B>) -> Router {
    let _ = backend;
    Router::new()
}
