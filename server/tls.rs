//! TLS for the HTTP and gRPC listeners (rustls, ring): certificates from PEM files, an optional client
//! certificate check, and an accept loop that hands finished handshakes to axum or tonic. Handshakes run on
//! tasks of their own so a slow or silent client never holds up the next connection.
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them; beyond this the accept loop waits.
const READY_CONNECTIONS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} '{path}': {source}")]
    Read {
        what: &'static str,
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("the TLS {what} '{path}' holds no {expected}")]
    Empty {
        what: &'static str,
        path: String,
        expected: &'static str,
    },
    #[error("the TLS client CA '{path}': {reason}")]
    ClientCa { path: String, reason: String },
    #[error("the TLS certificate and key do not make a usable server identity: {0}")]
    Identity(rustls::Error),
}

/// Where the server's identity and the optional client CA come from (`--tls-cert`, `--tls-key`,
/// `--tls-client-ca`).
#[derive(Debug, Clone)]
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    /// When given, every client must present a certificate this CA signed.
    pub client_ca: Option<&'a Path>,
}

/// One acceptor per protocol: both share the identity and differ in what ALPN offers.
#[derive(Clone)]
pub struct TlsAcceptors {
    pub http: TlsAcceptor,
    pub grpc: TlsAcceptor,
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            what,
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.display().to_string(),
            expected: "PEM certificate",
        });
    }
    Ok(certs)
}

impl TlsFiles<'_> {
    pub fn acceptors(&self) -> Result<TlsAcceptors, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certs(self.cert, "certificate")?;
        let key = PrivateKeyDer::from_pem_file(self.key).map_err(|source| match source {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
                what: "key",
                path: self.key.display().to_string(),
                expected: "PEM private key",
            },
            source => TlsError::Read {
                what: "key",
                path: self.key.display().to_string(),
                source,
            },
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Identity)?;
        let builder = match self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(ca, "client CA")? {
                    roots.add(cert).map_err(|e| TlsError::ClientCa {
                        path: ca.display().to_string(),
                        reason: e.to_string(),
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| TlsError::ClientCa {
                        path: ca.display().to_string(),
                        reason: e.to_string(),
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let base = builder.with_single_cert(certs, key).map_err(TlsError::Identity)?;
        let with_alpn = |protocols: &[&[u8]]| {
            let mut config = base.clone();
            config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
            TlsAcceptor::from(Arc::new(config))
        };
        Ok(TlsAcceptors {
            http: with_alpn(&[b"h2", b"http/1.1"]),
            // gRPC clients insist on h2 being negotiated.
            grpc: with_alpn(&[b"h2"]),
        })
    }
}

/// Accepts TCP connections until `stop`, runs each handshake on its own task, and yields the finished ones.
/// The listening socket closes as soon as `stop` resolves.
pub fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let (tx, rx) = mpsc::channel(READY_CONNECTIONS);
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut stop => return,
                conn = crate::accept::next_connection(&listener, "TLS") => conn,
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// axum's side of [`accept`].
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(TlsListener {
            ready: accept(listener, acceptor, stop),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop has stopped (shutdown): axum stops asking once its own signal fires.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
