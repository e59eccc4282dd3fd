//! The peer every HTTP benchmark is compared with: a bare axum server answering one JSON body of
//! the size of a catalog product, with nothing else on the path (no middleware, no cache).

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
use clap::Args;

#[derive(Args)]
pub struct PeerArgs {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
}

/// A product-sized JSON body (~330 bytes), built once.
fn body() -> String {
    serde_json::json!({
        "id": "0191e0a4-6c61-7b2d-8a3e-5f2c9d1e4b7a",
        "sku": "LAB-MUG",
        "name": "Lab mug",
        "description": "Stoneware, 350 ml, survives every deploy.",
        "price_minor": 1400,
        "currency": "USD",
        "demo": false,
        "version": 1,
        "xmin": "736",
        "created_at": "2026-11-25T17:45:33.274736Z",
        "updated_at": "2026-11-25T17:45:33.274736Z"
    })
    .to_string()
}

pub async fn serve_peer(args: PeerArgs) -> anyhow::Result<()> {
    let body = body();
    let answer = move || {
        let body = body.clone();
        async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        }
    };
    // `/products/{id}` too, so a proxy routing the catalog's public path can front the peer.
    let router = Router::new()
        .route("/product", get(answer.clone()))
        .route("/products/{id}", get(answer));
    // TCP_NODELAY as in lab-http, so the comparison is of the stacks, not of Nagle.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, router).await?;
    Ok(())
}
