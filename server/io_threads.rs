//! The threads that serve plain-TCP HTTP and gRPC connections: each runs a single-threaded tokio runtime, and a
//! connection is served whole on the thread it is handed when it is accepted (round robin).
//!
//! Why not the shared multi-threaded runtime: there an idle worker is woken to steal each newly woken task, so a
//! request's tasks (hyper's connection, h2's stream, the reply) hopped between threads, paying a futex wake-up and
//! a park per hop, and h2's connection task flushed a reply's headers and data from one thread while the call's
//! task was still producing the trailers on the other. Pinned, a connection's work runs back to back on one
//! thread and its reply leaves in one write (see `protocol::grpc_write_buffer`). TLS connections (their
//! handshakes run on the main runtime), the metrics port and everything else stay on the main runtime.
use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};

use crate::protocol::grpc_write_buffer::WriteBuffer;

/// The front-end threads; they stop when this is dropped.
pub struct IoThreads {
    handles: Vec<Handle>,
    /// Dropped with `IoThreads`: each thread's runtime then returns from `block_on` and is dropped.
    _stops: Vec<oneshot::Sender<()>>,
}

/// The connections one thread is handed, as axum's listener or tonic's incoming stream.
pub struct Connections {
    rx: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
}

impl IoThreads {
    /// Starts `count` threads (at least one) named `inferd-io-N`.
    pub fn start(count: usize) -> io::Result<Self> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("inferd-io-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let _ = stopped.await;
                    })
                })?;
        }
        Ok(IoThreads { handles, _stops: stops })
    }

    /// Runs `serve` on every thread, each over the connections handed to it, and accepts on `listener` until
    /// `stop`; ends when every thread's `serve` has ended (they are given `stop` to drain and end on).
    pub fn serve<S, F>(
        &self,
        listener: TcpListener,
        stop: watch::Receiver<bool>,
        serve: S,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static
    where
        S: Fn(Connections, watch::Receiver<bool>) -> F,
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let local = listener.local_addr();
        let mut senders = Vec::new();
        let mut servers = Vec::new();
        if let Ok(local) = local {
            for handle in &self.handles {
                let (tx, rx) = mpsc::unbounded_channel();
                senders.push(tx);
                servers.push(handle.spawn(serve(Connections { rx, local }, stop.clone())));
            }
        }
        async move {
            let local = local.map_err(|e| e.to_string())?;
            hand_out(listener, senders, stop).await;
            for server in servers {
                server.await.map_err(|e| format!("a front-end thread failed: {e}"))??;
            }
            tracing::debug!(%local, "front-end threads stopped");
            Ok(())
        }
    }
}

/// Accepts connections until `stop` and hands them to the threads in turn; the listening socket closes as soon as
/// `stop` resolves.
async fn hand_out(
    listener: TcpListener,
    threads: Vec<mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
    stop: watch::Receiver<bool>,
) {
    let stopped = async move {
        let mut stop = stop;
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    let mut next = 0;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => return,
            conn = crate::accept::next_connection(&listener, "TCP") => conn,
        };
        // Out of the main runtime's reactor; the thread registers it with its own.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(%peer, "handing a connection to a front-end thread failed: {e}");
                continue;
            }
        };
        if let Some(thread) = threads.get(next % threads.len().max(1)) {
            let _ = thread.send((tcp, peer));
        }
        next = next.wrapping_add(1);
    }
}

impl Connections {
    /// The next connection, registered with this thread's runtime; `None` once no more will come.
    pub async fn next(&mut self) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let (tcp, peer) = self.rx.recv().await?;
            if let Some(tcp) = register(tcp, peer) {
                return Some((tcp, peer));
            }
        }
    }

    /// tonic's incoming stream: each connection's writes gathered until h2 flushes.
    pub fn into_grpc_incoming(
        self,
    ) -> impl tokio_stream::Stream<Item = io::Result<WriteBuffer<TcpStream>>> + Send + 'static {
        let arrivals = tokio_stream::wrappers::UnboundedReceiverStream::new(self.rx);
        tokio_stream::StreamExt::filter_map(arrivals, |(tcp, peer)| {
            register(tcp, peer).map(|tcp| Ok(WriteBuffer::new(tcp)))
        })
    }
}

/// A handed connection registered with the calling thread's runtime; one that cannot be is logged and dropped.
fn register(tcp: std::net::TcpStream, peer: SocketAddr) -> Option<TcpStream> {
    TcpStream::from_std(tcp)
        .map_err(|e| tracing::warn!(%peer, "a front-end thread could not take a connection: {e}"))
        .ok()
}

impl axum::serve::Listener for Connections {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.next().await {
            Some(conn) => conn,
            // The accept loop has stopped (shutdown): axum stops asking once its own signal fires.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Each connection is echoed by the thread it was handed to, which writes its own name first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_served_whole_on_the_threads_in_turn() {
        let threads = IoThreads::start(2).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let serving = tokio::spawn(threads.serve(listener, stop_rx, |mut conns, mut stop| async move {
            let mut open = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    conn = conns.next() => {
                        let Some((mut tcp, _)) = conn else { break };
                        open.spawn(async move {
                            let name = std::thread::current().name().unwrap_or("").to_string();
                            let mut buf = [0u8; 5];
                            tcp.read_exact(&mut buf).await.unwrap();
                            tcp.write_all(format!("{name}:{}", String::from_utf8_lossy(&buf)).as_bytes()).await.unwrap();
                        });
                    }
                }
            }
            while open.join_next().await.is_some() {}
            Ok(())
        }));
        let mut seen = Vec::new();
        for _ in 0..4 {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"hello").await.unwrap();
            let mut reply = String::new();
            tcp.read_to_string(&mut reply).await.unwrap();
            seen.push(reply);
        }
        assert_eq!(
            seen,
            [
                "inferd-io-0:hello",
                "inferd-io-1:hello",
                "inferd-io-0:hello",
                "inferd-io-1:hello"
            ]
        );
        stop.send(true).unwrap();
        serving.await.unwrap().unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listening socket is closed once stopped"
        );
    }
}
