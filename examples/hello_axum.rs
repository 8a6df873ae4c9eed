//! The minimal endpoint the benchmarks compare BoxOffice with: axum serving `GET /` -> 200 "ok"
//! on the same tokio runtime settings as `boxoffice serve`, nothing else. `bench/run` measures
//! it with `boxoffice loadtest --scenario baseline --target ...`, so every BoxOffice figure can
//! be given as a ratio of what this machine serves at all.
//!
//! `cargo run --release --example hello_axum [-- ADDR]` (default `127.0.0.1:0`); it prints
//! `listening on http://ADDR` like `boxoffice serve`, and stops on SIGINT or SIGTERM.

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = Router::new().route("/", get(|| async { "ok" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("listen for SIGTERM");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        })
        .await
}
