use clap::Parser;
use signaling::app::{shutdown_signal, Application};
use signaling::config::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("verify") {
        std::process::exit(signaling::recorder::cli::run(std::env::args().skip(1)).await);
    }
    let settings = Settings::parse();
    signaling::telemetry::init(settings.log_format);
    tracing::info!(?settings, "starting");
    let app = Application::build(settings).await?;
    tracing::info!(address = %app.local_addr(), "listening");
    app.run_until(shutdown_signal()).await
}
