//! The bench's yardstick: the same hello route as `examples/hello`, served natively by axum with
//! no sandbox. Prints `listening on http://ADDR` and serves until killed.

use axum::Router;
use axum::extract::Path;
use axum::routing::get;

async fn hello(Path(name): Path<String>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "message": format!("hello, {name}") }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, Router::new().route("/hello/{name}", get(hello))).await?;
    Ok(())
}
