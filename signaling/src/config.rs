//! Settings, from flags or environment variables (`CW_*`). Secrets are kept out of `Debug`.

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where residents' one-time codes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OtpSenderKind {
    /// Write codes to the server log (allowed only with `--demo`).
    Log,
    /// No delivery: code requests answer 503 until a gateway is configured.
    Disabled,
}

/// A daily opening window `HH:MM-HH:MM` (Asia/Shanghai local time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyHours {
    /// Opens, minutes after midnight.
    pub open_min: u16,
    /// Closes, minutes after midnight (exclusive).
    pub close_min: u16,
}

impl std::str::FromStr for DailyHours {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
        };
        let (a, b) = s.split_once('-').ok_or("expected HH:MM-HH:MM")?;
        match (parse(a), parse(b)) {
            (Some(o), Some(c)) if o < c => Ok(DailyHours { open_min: o, close_min: c }),
            _ => Err("expected HH:MM-HH:MM with opening before closing".into()),
        }
    }
}

impl DailyHours {
    /// Length of the window in hours.
    pub fn hours(&self) -> f32 {
        (self.close_min - self.open_min) as f32 / 60.0
    }
}

/// A UDP port range `FROM-TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange(pub std::ops::RangeInclusive<u16>);

impl std::str::FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.split_once('-').ok_or("expected FROM-TO")?;
        let (a, b): (u16, u16) = (a.trim().parse().map_err(|_| "bad port")?, b.trim().parse().map_err(|_| "bad port")?);
        if a == 0 || a > b {
            return Err("expected 1 <= FROM <= TO".into());
        }
        Ok(PortRange(a..=b))
    }
}

/// Server settings.
#[derive(Clone, Parser)]
#[command(name = "cloud-window", version, about = "Remote video and assisted handling of government services")]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "CW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory for the embedded database, recordings and generated secrets.
    #[arg(long, env = "CW_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://PATH` (default: `cloud-window.db` in the data directory) or
    /// `postgres://...`.
    #[arg(long, env = "CW_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The URL residents and devices reach this server at (used in pairing QR codes).
    #[arg(long, env = "CW_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Log format.
    #[arg(long, env = "CW_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Service hours on workdays (12 h by default).
    #[arg(long, env = "CW_HOURS_WORKDAY", default_value = "08:00-20:00")]
    pub hours_workday: DailyHours,
    /// Service hours on weekend days (8 h by default).
    #[arg(long, env = "CW_HOURS_WEEKEND", default_value = "09:00-17:00")]
    pub hours_weekend: DailyHours,
    /// Secret that signs access tokens and keys stored hashes. When unset, one is generated
    /// and kept in the data directory (set it explicitly when several nodes run).
    #[arg(long, env = "CW_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Access token lifetime, seconds.
    #[arg(long, env = "CW_ACCESS_TTL_SECS", default_value_t = 900, value_parser = clap::value_parser!(i64).range(30..=86_400))]
    pub access_ttl_secs: i64,
    /// Refresh token lifetime, days.
    #[arg(long, env = "CW_REFRESH_TTL_DAYS", default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=365))]
    pub refresh_ttl_days: i64,
    /// Seed demo staff, residents and devices, and print how to sign in.
    #[arg(long, env = "CW_DEMO")]
    pub demo: bool,
    /// One-time code delivery (default: `log` in demo mode, else `disabled`).
    #[arg(long, env = "CW_OTP_SENDER", value_enum)]
    pub otp_sender: Option<OtpSenderKind>,
    /// Largest accepted JSON request body, bytes.
    #[arg(long, env = "CW_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Address the media relay binds its UDP sockets to (a concrete address, not 0.0.0.0).
    #[arg(long, env = "CW_MEDIA_BIND_IP", default_value = "127.0.0.1")]
    pub media_bind_ip: std::net::IpAddr,
    /// UDP port range for media, `FROM-TO` (one port per participant); default: ephemeral.
    #[arg(long, env = "CW_MEDIA_PORTS")]
    pub media_ports: Option<PortRange>,
    /// Public address announced to clients when the server sits behind 1:1 NAT.
    #[arg(long, env = "CW_MEDIA_PUBLIC_IP")]
    pub media_public_ip: Option<std::net::IpAddr>,
    /// STUN/TURN servers handed to clients, comma separated (`turn:user:pass@host:3478`
    /// carries credentials; `stun:host:3478` none).
    #[arg(long, env = "CW_ICE_SERVERS", value_delimiter = ',', hide_env_values = true)]
    pub ice_servers: Vec<String>,
    /// Seconds a participant whose connection dropped keeps their place in a call.
    #[arg(long, env = "CW_RECONNECT_GRACE_SECS", default_value_t = 20)]
    pub reconnect_grace_secs: u64,
    /// Seconds a signaling session whose socket dropped can be resumed.
    #[arg(long, env = "CW_RESUME_WINDOW_SECS", default_value_t = 60)]
    pub resume_window_secs: u64,
    /// Default recording retention, days (announced in the join notice).
    #[arg(long, env = "CW_RETENTION_DAYS", default_value_t = 180)]
    pub retention_days: u32,
    /// Where finished recordings are stored: `file:///dir` (default: `recordings/` in the data
    /// directory) or `s3://bucket/prefix` (S3-compatible; credentials and endpoint from the
    /// `AWS_*` environment variables). Segments are spooled locally first.
    #[arg(long, env = "CW_RECORDINGS_STORE_URL", hide_env_values = true)]
    pub recordings_store_url: Option<String>,
    /// Target length of a recording segment file, seconds.
    #[arg(long, env = "CW_RECORDING_SEGMENT_SECS", default_value_t = 10)]
    pub recording_segment_secs: u64,
    /// Agents may list and play the recordings of calls they were members of.
    #[arg(long, env = "CW_RECORDINGS_AGENT_ACCESS", default_value_t = true, action = clap::ArgAction::Set)]
    pub recordings_agent_access: bool,
    /// Longest wait between two upload attempts while the recordings store fails, seconds.
    #[arg(long, env = "CW_RECORDING_UPLOAD_RETRY_MAX_SECS", default_value_t = 60)]
    pub recording_upload_retry_max_secs: u64,
    /// Seconds between two retention sweeps.
    #[arg(long, env = "CW_RECORDING_SWEEP_SECS", default_value_t = 3600)]
    pub recording_sweep_secs: u64,
    /// On SIGTERM: seconds to keep serving while `/readyz` says 503, so load balancers move away.
    #[arg(long, env = "CW_DRAIN_SECS", default_value_t = 5)]
    pub drain_secs: u64,
    /// Queue and dispatch settings.
    #[command(flatten)]
    pub queue: crate::queue::QueueSettings,
    /// Cases: document limits, the follow-up deadline and the work calendar.
    #[command(flatten)]
    pub cases: CaseSettings,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database", &self.database_url.as_deref().map(redact_url))
            .field("public_url", &self.public_url)
            .field("log_format", &self.log_format)
            .field("hours_workday", &self.hours_workday)
            .field("hours_weekend", &self.hours_weekend)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("demo", &self.demo)
            .field("recordings_store_url", &self.recordings_store_url.as_deref().map(redact_url))
            .finish_non_exhaustive()
    }
}

/// Removes secrets from a URL for logging: the password of `user:password@host`, and the
/// value of every query parameter whose name says it holds one (`password=`, `sslpassword=`,
/// `secret=`, `token=`, ...).
pub fn redact_url(url: &str) -> String {
    // Query parameters first, so a password holding `@` cannot confuse the user-info step.
    let url = match url.split_once('?') {
        Some((head, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if secret_param(k) => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{head}?{}", params.join("&"))
        }
        None => url.to_string(),
    };
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..s], user, &url[at + 1..])
        }
        _ => url,
    }
}

fn secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "passwd", "pwd", "secret", "token", "credential"].iter().any(|w| n.contains(w)) || n == "pass"
}

impl Settings {
    /// Settings for tests: port 0 on loopback, the given data directory, everything else
    /// default.
    pub fn for_tests(data_dir: PathBuf) -> Settings {
        let mut s = Settings::parse_from(["cloud-window"]);
        s.listen = "127.0.0.1:0".parse().expect("valid address");
        s.data_dir = data_dir;
        s.secret = Some("test-secret-not-for-production".into());
        s.drain_secs = 0;
        s
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("cloud-window.db").display()))
    }

    /// Which code sender is in effect, refusing the log sender outside demo mode.
    pub fn otp_sender_kind(&self) -> anyhow::Result<OtpSenderKind> {
        match (self.otp_sender, self.demo) {
            (Some(OtpSenderKind::Log), false) => {
                anyhow::bail!("--otp-sender log writes codes to the log and is allowed only with --demo")
            }
            (Some(k), _) => Ok(k),
            (None, true) => Ok(OtpSenderKind::Log),
            (None, false) => Ok(OtpSenderKind::Disabled),
        }
    }
}

/// Settings of cases, documents and ratings.
#[derive(Debug, Clone, clap::Args)]
pub struct CaseSettings {
    /// Largest document (one page, photo or PDF), bytes.
    #[arg(long, env = "CW_MAX_DOCUMENT_BYTES", default_value_t = 20 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    pub max_document_bytes: u64,
    /// Working days a supervisor has to follow up a rating of 2 or less.
    #[arg(long, env = "CW_FOLLOW_UP_WORKING_DAYS", default_value_t = 15,
        value_parser = clap::value_parser!(u32).range(1..=365))]
    pub follow_up_working_days: u32,
    /// Public holidays that fall on weekdays, `YYYY-MM-DD`, comma separated.
    #[arg(long, env = "CW_HOLIDAYS", value_delimiter = ',', value_parser = parse_date)]
    pub holidays: Vec<time::Date>,
    /// Weekend days that are working days (调休), `YYYY-MM-DD`, comma separated.
    #[arg(long, env = "CW_EXTRA_WORKDAYS", value_delimiter = ',', value_parser = parse_date)]
    pub extra_workdays: Vec<time::Date>,
}

impl CaseSettings {
    /// The work calendar these settings describe.
    pub fn calendar(&self) -> crate::domain::case::WorkCalendar {
        crate::domain::case::WorkCalendar {
            holidays: self.holidays.iter().copied().collect(),
            extra_workdays: self.extra_workdays.iter().copied().collect(),
        }
    }
}

fn parse_date(s: &str) -> Result<time::Date, String> {
    time::Date::parse(s.trim(), time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|_| "expected YYYY-MM-DD".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_parse_and_reject_nonsense() {
        let h: DailyHours = "08:00-20:00".parse().unwrap();
        assert_eq!(h.hours(), 12.0);
        assert!("20:00-08:00".parse::<DailyHours>().is_err());
        assert!("8-20".parse::<DailyHours>().is_err());
        assert!("08:00-25:00".parse::<DailyHours>().is_err());
    }

    #[test]
    fn secrets_and_passwords_stay_out_of_debug() {
        let mut s = Settings::for_tests("/tmp/x".into());
        s.database_url = Some("postgres://cw:hunter2@db:5432/cw".into());
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2") && !d.contains("test-secret"), "{d}");
        assert!(d.contains("postgres://cw:***@db:5432/cw"));
    }

    #[test]
    fn redacted_urls_keep_no_password_in_user_info_or_query() {
        assert_eq!(redact_url("postgres://cw:hunter2@db:5432/cw"), "postgres://cw:***@db:5432/cw");
        assert_eq!(
            redact_url("postgres://db/cw?user=cw&password=hunter2&sslmode=require"),
            "postgres://db/cw?user=cw&password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgres://db/cw?PASSWORD=hunter2"), "postgres://db/cw?PASSWORD=***");
        assert_eq!(redact_url("postgres://db/cw?sslpassword=hunter2"), "postgres://db/cw?sslpassword=***");
        // A password holding `@` and `&`-free text is still hidden whole.
        let r = redact_url("postgres://db/cw?password=hun@ter2");
        assert!(!r.contains("hun") && !r.contains("ter2"), "{r}");
        let r = redact_url("postgres://cw:p%40ss@db/cw?password=hunter2&host=/run/pg");
        assert!(!r.contains("p%40ss") && !r.contains("hunter2") && r.contains("host=/run/pg"), "{r}");
        assert_eq!(redact_url("sqlite:///var/lib/cw/cloud-window.db"), "sqlite:///var/lib/cw/cloud-window.db");
        assert_eq!(redact_url("s3://bucket/prefix?region=cn-east"), "s3://bucket/prefix?region=cn-east");
    }

    #[test]
    fn log_sender_requires_demo_mode() {
        let mut s = Settings::for_tests("/tmp/x".into());
        s.otp_sender = Some(OtpSenderKind::Log);
        assert!(s.otp_sender_kind().is_err());
        s.demo = true;
        assert_eq!(s.otp_sender_kind().unwrap(), OtpSenderKind::Log);
    }
}
