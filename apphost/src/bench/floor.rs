//! `lab bench floor` (hidden): the least a Rust proxy on hyper 1.x can spend per proxied read,
//! to know how far the BFF is from what its libraries allow before cutting its own cost.
//!
//! A hyper HTTP/1 server connection per caller, nothing but the upstream hop behind it: no
//! routing, edge, resilience, header rewriting or metrics. Two ways to reach the upstream:
//! `conn`, one `hyper::client::conn::http1` connection per caller connection (the cheapest hop
//! hyper offers), and `client`, hyper-util's pooled legacy `Client` shared by every caller (what
//! the BFF used until session 5). Measured with callgrind and wrk beside `lab bench bff`.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

#[derive(Args)]
pub struct FloorArgs {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// The upstream's address.
    #[arg(long)]
    upstream: SocketAddr,
    /// How the upstream is reached.
    #[arg(long, value_enum)]
    mode: Mode,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// One `hyper::client::conn::http1` connection per caller connection.
    Conn,
    /// hyper-util's pooled legacy `Client`, shared.
    Client,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub async fn serve_floor(args: FloorArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (client, upstream, mode) = (client.clone(), args.upstream, args.mode);
        tokio::spawn(async move {
            let result = match mode {
                Mode::Conn => serve_conn(tcp, upstream).await,
                Mode::Client => serve_client(tcp, client, upstream).await,
            };
            if let Err(e) = result {
                tracing::debug!("floor connection: {e:#}");
            }
        });
    }
}

/// The upstream hop over one dedicated connection, opened on the caller's first request.
async fn serve_conn(tcp: TcpStream, upstream: SocketAddr) -> anyhow::Result<()> {
    let sender: Mutex<Option<hyper::client::conn::http1::SendRequest<Incoming>>> = Mutex::new(None);
    let sender = &sender;
    let service = service_fn(move |request: Request<Incoming>| async move {
        // One request at a time per caller connection (HTTP/1), so the lock is never contended.
        let mut slot = sender.lock().await;
        if slot.as_ref().is_none_or(|s| s.is_closed()) {
            let tcp = TcpStream::connect(upstream).await?;
            tcp.set_nodelay(true)?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            *slot = Some(send);
        }
        let send = slot.as_mut().context("no upstream connection")?;
        send.ready().await?;
        let response = send.send_request(request).await?;
        Ok::<_, anyhow::Error>(response.map(|b| b.boxed()))
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service_fn(|r| answer(&service, r)))
        .await?;
    Ok(())
}

/// The upstream hop through the shared pooled client.
async fn serve_client(
    tcp: TcpStream,
    client: Client<HttpConnector, Incoming>,
    upstream: SocketAddr,
) -> anyhow::Result<()> {
    let client = &client;
    let service = service_fn(move |request: Request<Incoming>| async move {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("http://{upstream}{path}").parse()?;
        let response = client.request(Request::from_parts(parts, body)).await?;
        Ok::<_, anyhow::Error>(response.map(|b| b.boxed()))
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service_fn(|r| answer(&service, r)))
        .await?;
    Ok(())
}

/// A failed hop as a bare 502.
async fn answer<S>(
    service: &S,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible>
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = anyhow::Error,
        >,
{
    match service.call(request).await {
        Ok(response) => Ok(response),
        Err(_) => {
            let mut response = Response::new(Empty::new().map_err(|n| match n {}).boxed());
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(response)
        }
    }
}
