//! The registry's listener: TLS (rustls) or plain HTTP, a bound on open
//! connections, a deadline for a request's headers, and the certificate and key
//! reloaded when their files change (cert-manager rotates them in place).

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::Router;
use axum_server::{accept::Accept, tls_rustls::RustlsAcceptor};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tracing::{info, warn};

use super::{ServeError, Settings};
use crate::runtime::{admin_server::Gate, metrics::Metrics, tls};

/// Serves `app` until the process ends; opens `listening` once the socket is
/// bound, and says where (the port chosen, for an address with port 0).
pub async fn serve(settings: &Settings, app: Router, metrics: Metrics, listening: Gate) -> Result<(), ServeError> {
    let limited = Limited { permits: Arc::new(Semaphore::new(settings.max_connections.max(1))), metrics };
    let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let handle = axum_server::Handle::new();
    let bound = handle.clone();
    tokio::spawn(async move {
        if let Some(addr) = bound.listening().await {
            info!(%addr, "the registry API listens");
            listening.open();
        }
    });
    match (&settings.tls, settings.insecure_http) {
        (Some((cert, key)), _) => {
            let config = tls::watched("registry", cert, key).map_err(|e| ServeError::Tls(e.to_string()))?;
            info!(addr = %settings.addr, max_connections = settings.max_connections, "serving the registry API over TLS");
            let mut server =
                axum_server::bind(settings.addr).acceptor(RustlsAcceptor::new(config).acceptor(limited)).handle(handle);
            server.http_builder().http1().header_read_timeout(settings.header_read_timeout);
            server.serve(service).await?;
        }
        (None, true) => {
            warn!(addr = %settings.addr, "serving the registry API over plain HTTP (--registry-insecure-http)");
            let mut server = axum_server::bind(settings.addr).acceptor(limited).handle(handle);
            server.http_builder().http1().header_read_timeout(settings.header_read_timeout);
            server.serve(service).await?;
        }
        (None, false) => return Err(ServeError::NoTls),
    }
    Ok(())
}

/// Accepts a connection only while fewer than the limit are open; the permit
/// travels with the connection and is returned when it closes. A connection
/// over the limit is closed at once.
#[derive(Clone)]
struct Limited {
    permits: Arc<Semaphore>,
    metrics: Metrics,
}

impl<I, S> Accept<I, S> for Limited {
    type Stream = Counted<I>;
    type Service = S;
    type Future = std::future::Ready<io::Result<(Counted<I>, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        std::future::ready(match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.metrics.registry_connections.inc();
                Ok((
                    Counted { inner: stream, _permit: permit, open: self.metrics.registry_connections.clone() },
                    service,
                ))
            }
            Err(_) => {
                self.metrics.registry_connections_refused.inc();
                Err(io::Error::other("the registry has as many connections open as it allows"))
            }
        })
    }
}

/// A connection holding one of the limited permits.
pub struct Counted<I> {
    inner: I,
    _permit: OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl<I> Drop for Counted<I> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
