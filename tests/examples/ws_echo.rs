//! A bare tokio-tungstenite echo server: the baseline of the idle-connections bench
//! (`benches/idle_connections.rs`). Usage: `ws_echo <listen-addr> [small|default]`; `small`
//! (the default) uses the same WebSocket buffers as the server's `/ws` (4 KiB read buffer, no
//! write buffering), `default` tungstenite's defaults. Prints `listening <addr>` when ready.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let small = args.next().as_deref() != Some("default");
    let listener = TcpListener::bind(&addr).await?;
    println!("listening {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let config = small.then(|| {
            WebSocketConfig::default()
                .read_buffer_size(4 * 1024)
                .write_buffer_size(0)
                .max_write_buffer_size(128 * 1024)
        });
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, config).await else { return };
            while let Some(Ok(msg)) = ws.next().await {
                if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                    break;
                }
            }
        });
    }
}
