//! TLS for the gateway with rustls (ring): a listener that hands axum finished TLS streams.
//! Handshakes run in their own tasks (with a timeout), so a slow client never holds up accept.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::GatewayError;

/// Reads a certificate chain and private key (PEM) into a TLS acceptor.
pub(super) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, GatewayError> {
    let bad = |key: &'static str, reason: String| GatewayError::Config { key, reason };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad("tls_cert", format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("tls_cert", format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(bad(
            "tls_cert",
            format!("{}: no certificate in the file", cert.display()),
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| bad("tls_key", format!("{}: {e}", key.display())))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("tls", e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A listener that yields TLS streams (plain TCP accepted, handshake in a task).
pub(super) struct TlsListener {
    local: SocketAddr,
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    pub(super) fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        send_buffer: Option<usize>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(code = "tls_accept_failed", error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                tune(&stream, send_buffer);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            local,
            rx,
            accept_task,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(s) => s,
            // The accept task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Applies the per-connection socket settings.
pub(super) fn tune(stream: &TcpStream, send_buffer: Option<usize>) {
    let _ = stream.set_nodelay(true);
    if let Some(n) = send_buffer
        && let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(n)
    {
        tracing::debug!(error = %e, "setting the send buffer failed");
    }
}
