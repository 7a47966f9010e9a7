//! The operator's own HTTP endpoints: `/metrics` (Prometheus), `/healthz`
//! (the process is alive) and `/readyz` (caches are synced and, when it is on,
//! the registry API listens).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::runtime::metrics::Metrics;

/// Whether the operator is ready to serve: every gate taken with
/// [`Readiness::gate`] is open. Cheap to clone.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Mutex<Vec<(&'static str, bool)>>>);

/// One thing readiness waits for; [`Gate::open`] when it is done.
pub struct Gate {
    readiness: Readiness,
    index: usize,
}

impl Readiness {
    /// A new gate, closed until opened. Take every gate before serving /readyz.
    pub fn gate(&self, what: &'static str) -> Gate {
        let mut gates = self.0.lock().unwrap_or_else(|e| e.into_inner());
        gates.push((what, false));
        Gate { readiness: self.clone(), index: gates.len() - 1 }
    }

    /// What readiness still waits for; empty when ready.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        let gates = self.0.lock().unwrap_or_else(|e| e.into_inner());
        gates.iter().filter(|(_, open)| !open).map(|(what, _)| *what).collect()
    }

    pub fn is_ready(&self) -> bool {
        self.waiting_for().is_empty()
    }
}

impl Gate {
    pub fn open(self) {
        let mut gates = self.readiness.0.lock().unwrap_or_else(|e| e.into_inner());
        gates[self.index].1 = true;
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    readiness: Readiness,
}

/// Binds `addr`. Returns the bound address (useful with port 0) and the future
/// that serves until the process ends.
pub async fn bind(
    addr: SocketAddr,
    metrics: Metrics,
    readiness: Readiness,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let router = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, readiness });
    Ok((local, async move { axum::serve(listener, router).await }))
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let waiting = state.readiness.waiting_for();
    if waiting.is_empty() {
        (StatusCode::OK, "ok".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("waiting for: {}", waiting.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_gate_is_open() {
        let readiness = Readiness::default();
        assert!(readiness.is_ready(), "no gates, nothing to wait for");
        let caches = readiness.gate("caches to sync");
        let registry = readiness.gate("the registry API to listen");
        assert_eq!(readiness.waiting_for(), ["caches to sync", "the registry API to listen"]);
        registry.open();
        assert_eq!(readiness.waiting_for(), ["caches to sync"]);
        caches.open();
        assert!(readiness.is_ready());
    }
}
