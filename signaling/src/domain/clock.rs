//! Time, injected: domain rules take `now` as an argument; the server holds a [`Clock`].

use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

/// A point in time as Unix milliseconds (what storage keeps).
pub type Millis = i64;

/// Converts Unix milliseconds to a date-time (UTC).
pub fn to_datetime(ms: Millis) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Converts a date-time to Unix milliseconds.
pub fn to_millis(t: OffsetDateTime) -> Millis {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Now, as Unix milliseconds.
    fn now_ms(&self) -> Millis;
    /// Now, as a date-time.
    fn now(&self) -> OffsetDateTime {
        to_datetime(self.now_ms())
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        to_millis(OffsetDateTime::now_utc())
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct FakeClock(AtomicI64);

impl FakeClock {
    /// A fake clock at `ms`.
    pub fn at(ms: Millis) -> Self {
        FakeClock(AtomicI64::new(ms))
    }
    /// Moves the clock forward.
    pub fn advance_ms(&self, by: i64) {
        self.0.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Formats a date as `YYYY-MM-DD`.
pub fn format_date(d: time::Date) -> String {
    d.format(time::macros::format_description!("[year]-[month]-[day]")).unwrap_or_default()
}
