//! The threads that serve plain-TCP HTTP and gRPC connections: each runs a single-threaded tokio runtime, and a
//! connection is served whole on the thread it is handed when it is accepted (round robin).
//!
//! Why not the shared multi-threaded runtime: there an idle worker is woken to steal each newly woken task, so a
//! request's tasks (hyper's connection, h2's stream, the reply) hopped between threads, paying a futex wake-up and
//! a park per hop, and h2's connection task flushed a reply's headers and data from one thread while the call's
//! task was still producing the trailers on the other. Pinned, a connection's work runs back to back on one
//! thread and its reply leaves in one write (see `protocol::grpc_write_buffer`). TLS connections (their
//! handshakes run on the main runtime), the metrics port and everything else stay on the main runtime.
//!
//! Under load a thread waits a moment before it polls its sockets again (`Coalescing`): with the client on the
//! same cores, a thread that went to sleep as soon as it ran out of work was woken again for nearly every
//! request, and those sleeps and wake-ups, not the requests, were most of its CPU.
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// How long a front-end thread that has just served a busy turn waits before it polls its sockets again.
///
/// A turn is busy when the thread read from two or more of its connections between two sleeps: requests are
/// arriving faster than one per wake-up, so waiting gathers the next ones into one turn (one wake-up, one poll of
/// the sockets, and the requests for a fast model run as one batch) at the cost of up to this much latency. A
/// lone client (c=1) never waits, nor does one connection streaming a large body in several reads, nor a single
/// HTTP/2 connection (its requests already arrive together). Zero turns it off.
#[derive(Clone, Copy, Debug, Default)]
pub struct Coalescing {
    pub wait: Duration,
}

/// Connections read from that make a turn busy.
const BUSY_TURN_CONNECTIONS: u32 = 2;

thread_local! {
    /// The connection this thread last read data from, and how many times the connection read from changed,
    /// since the thread last went to sleep.
    static TURN: Cell<(u64, u32)> = const { Cell::new((0, 0)) };
}

/// Numbers the connections (from 1: 0 is "none yet" in `TURN`).
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Counts a read of data from connection `id` into this thread's turn.
fn count_read(id: u64) {
    let (last, connections) = TURN.get();
    if last != id {
        TURN.set((id, connections.saturating_add(1)));
    }
}

impl Coalescing {
    /// Called as the thread runs out of work, before it sleeps until a socket is ready: ends the turn, and waits
    /// first if it was busy. Says whether it waited.
    fn end_turn(self) -> bool {
        let (_, connections) = TURN.replace((0, 0));
        let wait = connections >= BUSY_TURN_CONNECTIONS && !self.wait.is_zero();
        if wait {
            std::thread::sleep(self.wait);
        }
        wait
    }
}

/// Lets waits on this thread end within a microsecond or two of when they are due: Linux's default timer slack
/// (50 µs) would stretch a coalescing wait of tens of microseconds to several times its length.
fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes only the calling thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
}

impl IoThreads {
    /// Starts `count` threads (at least one) named `inferd-io-N`.
    pub fn start(count: usize, coalescing: Coalescing) -> io::Result<Self> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(move || {
                    coalescing.end_turn();
                })
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("inferd-io-{i}"))
                .spawn(move || {
                    tighten_timer_slack();
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
    pub async fn next(&mut self) -> Option<(Counted<TcpStream>, SocketAddr)> {
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
    ) -> impl tokio_stream::Stream<Item = io::Result<WriteBuffer<Counted<TcpStream>>>> + Send + 'static {
        let arrivals = tokio_stream::wrappers::UnboundedReceiverStream::new(self.rx);
        tokio_stream::StreamExt::filter_map(arrivals, |(tcp, peer)| {
            register(tcp, peer).map(|tcp| Ok(WriteBuffer::new(tcp)))
        })
    }
}

/// A handed connection registered with the calling thread's runtime; one that cannot be is logged and dropped.
fn register(tcp: std::net::TcpStream, peer: SocketAddr) -> Option<Counted<TcpStream>> {
    TcpStream::from_std(tcp)
        .map(Counted::new)
        .map_err(|e| tracing::warn!(%peer, "a front-end thread could not take a connection: {e}"))
        .ok()
}

/// A connection whose reads count towards its thread's turn (see `Coalescing`).
pub struct Counted<T> {
    inner: T,
    id: u64,
}

impl<T> Counted<T> {
    fn new(inner: T) -> Self {
        Counted {
            inner,
            id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            count_read(this.id);
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Counted<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl axum::serve::Listener for Connections {
    type Io = Counted<TcpStream>;
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

    const WAIT: Coalescing = Coalescing {
        wait: Duration::from_micros(50),
    };

    /// Reads `n` bytes from `conn` after its peer has sent them.
    async fn read_from(conn: &mut Counted<tokio::io::DuplexStream>, peer: &mut tokio::io::DuplexStream, n: usize) {
        peer.write_all(&vec![7u8; n]).await.unwrap();
        let mut buf = vec![0u8; n];
        conn.read_exact(&mut buf).await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_turn_that_read_from_two_connections_waits_before_the_thread_sleeps() {
        let (a, mut a_peer) = tokio::io::duplex(64);
        let (b, mut b_peer) = tokio::io::duplex(64);
        let (mut a, mut b) = (Counted::new(a), Counted::new(b));
        WAIT.end_turn();
        read_from(&mut a, &mut a_peer, 8).await;
        read_from(&mut b, &mut b_peer, 8).await;
        assert!(WAIT.end_turn(), "two connections read in one turn: busy");
        assert!(!WAIT.end_turn(), "the next turn starts empty");
        read_from(&mut a, &mut a_peer, 8).await;
        read_from(&mut b, &mut b_peer, 8).await;
        assert!(!Coalescing::default().end_turn(), "no wait configured: never waits");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_connection_never_makes_a_turn_wait_however_many_reads_it_takes() {
        let (a, mut a_peer) = tokio::io::duplex(64);
        let mut a = Counted::new(a);
        WAIT.end_turn();
        for _ in 0..5 {
            read_from(&mut a, &mut a_peer, 32).await;
        }
        assert!(
            !WAIT.end_turn(),
            "a lone client's request, or one large body, never waits"
        );
        let mut buf = [0u8; 8];
        drop(a_peer);
        assert_eq!(a.read(&mut buf).await.unwrap(), 0);
        assert!(!WAIT.end_turn(), "an end of stream is not a read of data");
    }

    /// Each connection is echoed by the thread it was handed to, which writes its own name first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_are_served_whole_on_the_threads_in_turn() {
        let threads = IoThreads::start(2, Coalescing::default()).unwrap();
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
