//! Taking the next TCP connection off a listening socket, for every front-end that runs its own accept loop.
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The next connection, with Nagle's algorithm off (small responses go out at once rather than waiting for the
/// client's delayed ACK). A failed accept (out of file descriptors and the like) is logged and retried after a
/// pause instead of spinning.
pub async fn next_connection(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, peer);
            }
            Err(e) => {
                tracing::warn!("accepting a {what} connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
