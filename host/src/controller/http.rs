//! `/metrics`, `/healthz`, `/readyz` and `/debug/records`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::Handles;

/// Serves until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener, h: Handles) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/debug/records", get(records))
        .with_state(h);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "http server stopped");
    }
}

async fn metrics(State(h): State<Handles>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

/// How long one reconcile may run before `/healthz` calls the process wedged.
pub const STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// Healthy while every supervised task (watches, workers, leadership, housekeeping) runs and
/// no reconcile has been running for [`STUCK_AFTER`]; otherwise 500 with what is wrong, so
/// that the kubelet restarts the pod. A healthy body also names the keys that are retrying
/// after a panic (a restart would not help them: the panic is contained to its key).
async fn healthz(State(h): State<Handles>) -> impl IntoResponse {
    match super::health_problem(&h) {
        None => {
            let mut body = "ok".to_string();
            for n in super::health_notes(&h) {
                body.push('\n');
                body.push_str(&n);
            }
            (StatusCode::OK, body)
        }
        Some(p) => (StatusCode::INTERNAL_SERVER_ERROR, p),
    }
}

/// Ready once the shared caches have listed everything (a follower is ready too: it can
/// take over at once).
async fn readyz(State(h): State<Handles>) -> impl IntoResponse {
    let synced = h.world.read().expect("world").core_synced();
    if synced {
        (StatusCode::OK, "ready".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "caches not synced yet".to_string(),
        )
    }
}

async fn records(State(h): State<Handles>) -> impl IntoResponse {
    let records = h.records.lock().expect("records");
    let list: Vec<_> = records
        .iter()
        .map(|(k, r)| json!({"kind": k, "record": r}))
        .collect();
    let body = json!({
        "identity": h.leader.identity(),
        "leader": h.leader.is_leader(),
        "records": list,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}
