use clap::Parser;
use signaling::app::{shutdown_signal, Application};
use signaling::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    signaling::telemetry::init(settings.log_format);
    tracing::info!(?settings, "starting");
    let app = Application::build(settings).await?;
    tracing::info!(address = %app.local_addr(), "listening");
    app.run_until(shutdown_signal()).await
}
