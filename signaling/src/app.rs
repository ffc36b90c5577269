//! Building and running the server: settings → state → router → listener. Tests call
//! [`Application::build_with`] on port 0 with their own clock and code sender.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::auth::codes::{CodeSender, DisabledSender, LogSender};
use crate::auth::tokens::Tokens;
use crate::auth::Hasher;
use crate::config::{OtpSenderKind, Settings};
use crate::domain::clock::{Clock, SystemClock};
use crate::domain::people::{Actor, AuditEntry};
use crate::store::{self, Store, StoreResult};

/// Shared state of the server, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Current time.
    pub clock: Arc<dyn Clock>,
    /// Access tokens.
    pub tokens: Arc<Tokens>,
    /// Keyed hashes of stored secrets.
    pub hasher: Hasher,
    /// One-time code delivery.
    pub codes: Arc<dyn CodeSender>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// True once a shutdown began: `/readyz` answers 503.
    pub draining: Arc<AtomicBool>,
    /// WebSocket sessions and calls.
    pub signaling: Arc<crate::ws::Signaling>,
    /// The queue service of this node.
    pub queue: Arc<crate::queue::Queue>,
    /// The audit recorder.
    pub recorder: Arc<crate::recorder::Recorder>,
}

impl AppState {
    /// Appends an audit entry now.
    pub async fn audit(
        &self,
        actor: Actor,
        action: &str,
        target_kind: &str,
        target_id: impl ToString,
        detail: serde_json::Value,
    ) -> StoreResult<()> {
        self.store
            .append_audit(&AuditEntry {
                id: Default::default(),
                at: self.clock.now_ms(),
                actor,
                action: action.into(),
                target_kind: target_kind.into(),
                target_id: target_id.to_string(),
                detail,
            })
            .await
    }

    /// Is the server draining?
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Parts a test or an embedding program may replace.
pub struct Components {
    /// The clock (default: the system clock).
    pub clock: Arc<dyn Clock>,
    /// The code sender (default: from settings).
    pub codes: Option<Arc<dyn CodeSender>>,
}

impl Default for Components {
    fn default() -> Self {
        Components { clock: Arc::new(SystemClock), codes: None }
    }
}

/// A built server, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
}

impl Application {
    /// Builds the server from settings with default components.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with(settings, Components::default()).await
    }

    /// Builds the server: opens and migrates storage, seeds the catalogue (and demo data with
    /// `--demo`), binds the listener.
    pub async fn build_with(settings: Settings, parts: Components) -> anyhow::Result<Application> {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("creating data directory {}", settings.data_dir.display()))?;
        let secret = load_or_create_secret(&settings)?;
        let store = store::connect(&settings.database_url()).await.context("opening the database")?;
        let now = parts.clock.now_ms();
        let seeded = store::seed_catalogue(store.as_ref(), now).await?;
        if seeded > 0 {
            tracing::info!(matters = seeded, "seeded the matters catalogue");
        }
        let codes: Arc<dyn CodeSender> = match parts.codes {
            Some(c) => c,
            None => match settings.otp_sender_kind()? {
                OtpSenderKind::Log => Arc::new(LogSender),
                OtpSenderKind::Disabled => Arc::new(DisabledSender),
            },
        };
        let recorder = crate::recorder::Recorder::start(&settings, store.clone(), parts.clock.clone())
            .await
            .context("starting the recorder")?;
        let mut relay_config = relay_config(&settings)?;
        relay_config.tap = Some(recorder.clone() as Arc<dyn crate::sfu::TapFactory>);
        let relay = crate::sfu::Relay::new(relay_config);
        recorder.attach_relay(relay.downgrade());
        let hub = crate::ws::Hub::new(
            store.clone(),
            parts.clock.clone(),
            relay,
            crate::ws::HubConfig {
                grace: Duration::from_secs(settings.reconnect_grace_secs),
                retention_days: settings.retention_days,
            },
        );
        let signaling = crate::ws::Signaling::start(hub, Duration::from_secs(settings.resume_window_secs));
        let queue = crate::queue::Queue::new(
            store.clone(),
            parts.clock.clone(),
            settings.queue.clone(),
            settings.queue.hours(settings.hours_workday, settings.hours_weekend, &settings.cases.calendar())?,
        )?;
        queue.start();
        let state = AppState {
            queue,
            signaling,
            recorder,
            store,
            clock: parts.clock,
            tokens: Arc::new(Tokens::new(secret.as_bytes(), settings.access_ttl_secs)?),
            hasher: Hasher::new(format!("hash:{secret}").as_bytes()),
            codes,
            settings: Arc::new(settings.clone()),
            draining: Arc::new(AtomicBool::new(false)),
        };
        if settings.demo {
            crate::demo::seed(&state).await.context("seeding demo data")?;
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding {}", settings.listen))?;
        let router = crate::api::router(state.clone());
        Ok(Application { listener, router, state })
    }

    /// The bound address (the real port when built with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains: `/readyz` turns 503, requests in flight
    /// finish, and the server stops after the drain period.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let state = self.state.clone();
        let drain = Duration::from_secs(state.settings.drain_secs);
        let signal = async move {
            shutdown.await;
            state.draining.store(true, Ordering::SeqCst);
            state.signaling.hub.shutdown().await;
            state.recorder.shutdown().await;
            tracing::info!(drain_secs = drain.as_secs(), "shutdown requested: draining");
            tokio::time::sleep(drain).await;
        };
        axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(signal)
            .await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The media relay's configuration from settings.
fn relay_config(settings: &Settings) -> anyhow::Result<crate::sfu::RelayConfig> {
    let mut ice_servers = Vec::new();
    for s in &settings.ice_servers {
        let s = s.trim();
        // `turn:user:pass@host:port` → credentials apart from the URL.
        let server = match s.split_once('@') {
            Some((creds, host)) => {
                let (scheme, creds) = creds.split_once(':').context("ICE server: expected scheme:...")?;
                let (user, pass) = creds.split_once(':').context("ICE server: expected user:pass@host")?;
                crate::sfu::RTCIceServer {
                    urls: vec![format!("{scheme}:{host}")],
                    username: user.into(),
                    credential: pass.into(),
                    ..Default::default()
                }
            }
            None => crate::sfu::RTCIceServer { urls: vec![s.to_string()], ..Default::default() },
        };
        ice_servers.push(server);
    }
    Ok(crate::sfu::RelayConfig {
        bind_ip: settings.media_bind_ip,
        port_range: settings.media_ports.clone().map(|p| p.0),
        nat_1to1_ips: settings.media_public_ip.into_iter().collect(),
        ice_servers,
        ..Default::default()
    })
}

/// The configured secret, or one generated once and kept (mode 0600) in the data directory.
fn load_or_create_secret(settings: &Settings) -> anyhow::Result<String> {
    if let Some(s) = &settings.secret {
        anyhow::ensure!(s.len() >= 16, "the secret must be at least 16 characters");
        return Ok(s.clone());
    }
    let path = settings.data_dir.join("secret.key");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_string();
        anyhow::ensure!(s.len() >= 16, "{} is too short", path.display());
        return Ok(s);
    }
    let s = crate::auth::random_token();
    std::fs::write(&path, &s).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    tracing::info!(path = %path.display(), "generated a new server secret");
    Ok(s)
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
