//! The HTTP side: `GET /health` (health plugin), `GET /ready` (ready plugin: 200 once the
//! first watch lists are in, 503 before), `GET /metrics` (prometheus plugin).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::chain::HttpRoutes;
use crate::metrics::Metrics;

pub(crate) fn router(routes: HttpRoutes, metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    let mut router = Router::new();
    if routes.health {
        router = router.route("/health", get(|| async { "OK" }));
    }
    if routes.ready {
        router = router.route(
            "/ready",
            get(move || {
                let ready = ready.load(Ordering::SeqCst);
                async move {
                    if ready {
                        (StatusCode::OK, "OK")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "kubernetes")
                    }
                }
            }),
        );
    }
    if routes.metrics {
        router = router.route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move {
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
                }
            }),
        );
    }
    router
}
