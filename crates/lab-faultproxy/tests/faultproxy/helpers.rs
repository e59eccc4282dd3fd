//! Small servers for the proxy to forward to, and a harness holding a registry and one proxy.

use std::net::SocketAddr;
use std::time::Duration;

use lab_faultproxy::{Chaos, Fault, FaultId, Proxy, ProxyConfig, Requester, Scope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Long enough for any test here; faults expire by themselves after it.
pub const TTL: Duration = Duration::from_secs(60);

/// A bound on any single wait in a test, so a broken proxy fails the test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

/// A registry with one proxy registered under targets `client` and `server`.
pub struct Harness {
    pub chaos: Chaos,
    pub proxy: Proxy,
    pub shutdown: CancellationToken,
    _tracker: TaskTracker,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Harness {
    /// A proxy named `edge` in front of `upstream`.
    pub async fn new(edge: &str, upstream: SocketAddr) -> Self {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let chaos = Chaos::start(&tracker, shutdown.clone());
        let proxy = start_proxy(edge, upstream, &shutdown).await;
        chaos
            .add_edge(&proxy, ["client", "server"])
            .expect("register");
        Harness {
            chaos,
            proxy,
            shutdown,
            _tracker: tracker,
        }
    }

    /// Applies `fault` to the whole edge.
    pub fn apply(&self, fault: Fault) -> FaultId {
        self.chaos
            .apply(
                Scope::Edge(self.proxy.name().to_owned()),
                fault,
                TTL,
                Requester::Visitor,
            )
            .expect("apply")
            .id
    }

    pub async fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.proxy.local_addr())
            .await
            .expect("connect to proxy");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }
}

pub async fn start_proxy(edge: &str, upstream: SocketAddr, shutdown: &CancellationToken) -> Proxy {
    let config = ProxyConfig {
        name: edge.to_owned(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        upstream,
    };
    Proxy::start(config, shutdown).await.expect("start proxy")
}

/// Spawns a loopback server running `handler` per connection; it lives as long as the test.
pub async fn server<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(handler(stream));
        }
    });
    addr
}

/// Writes back what it reads, until EOF.
pub async fn echo_server() -> SocketAddr {
    server(|mut stream| async move {
        let (mut read, mut write) = stream.split();
        let _ = tokio::io::copy(&mut read, &mut write).await;
        let _ = write.shutdown().await;
    })
    .await
}

/// Writes `bytes` on connect, then waits for the client to close.
pub async fn talker_server(bytes: Vec<u8>) -> SocketAddr {
    server(move |mut stream| {
        let bytes = bytes.clone();
        async move {
            let _ = stream.write_all(&bytes).await;
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }
    })
    .await
}

/// Writes `bytes` on connect and closes at once.
pub async fn say_and_close_server(bytes: &'static [u8]) -> SocketAddr {
    server(move |mut stream| async move {
        let _ = stream.write_all(bytes).await;
        let _ = stream.shutdown().await;
    })
    .await
}

/// `len` bytes that show any reordering or loss: a big-endian counter of u32s.
pub fn pattern(len: usize) -> Vec<u8> {
    (0u32..).flat_map(u32::to_be_bytes).take(len).collect()
}

/// One request/response through `stream`: writes `message`, reads as many bytes back.
pub async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.expect("write");
    let mut reply = vec![0u8; message.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut reply))
        .await
        .expect("reply within the bound")
        .expect("read reply");
    reply
}
