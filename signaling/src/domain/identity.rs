//! Who is who: roles, validated personal values (masked whenever printed), and the sign-in
//! policies (lockout after failed passwords, one-time codes).

use serde::{Deserialize, Serialize};
use std::fmt;

use super::clock::Millis;
use super::DomainError;

/// A role carried in every access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A resident handling their own matter.
    Resident,
    /// A paired kiosk or TV box.
    Device,
    /// A back-office agent.
    Agent,
    /// A grid helper acting for residents under delegation.
    Helper,
    /// A supervisor (live figures, ratings).
    Supervisor,
    /// An auditor (recordings, audit log).
    Auditor,
    /// An administrator (accounts, devices, catalogue).
    Admin,
}

impl Role {
    /// Stable lowercase name (as stored and in tokens).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Resident => "resident",
            Role::Device => "device",
            Role::Agent => "agent",
            Role::Helper => "helper",
            Role::Supervisor => "supervisor",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored role name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "resident" => Role::Resident,
            "device" => Role::Device,
            "agent" => Role::Agent,
            "helper" => Role::Helper,
            "supervisor" => Role::Supervisor,
            "auditor" => Role::Auditor,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    /// Roles a staff account may have.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Agent | Role::Helper | Role::Supervisor | Role::Auditor | Role::Admin)
    }
}

/// A staff sign-in name: 3–32 of `[a-z0-9._-]`, starting with a letter.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    /// Parses and normalises (lowercase) a username.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let s = s.trim().to_ascii_lowercase();
        let ok = (3..=32).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        if ok {
            Ok(Username(s))
        } else {
            Err(DomainError::invalid("username", "3-32 characters of a-z, 0-9, '.', '_', '-', starting with a letter"))
        }
    }
    /// The username.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Username {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Username::parse(&s)
    }
}
impl From<Username> for String {
    fn from(u: Username) -> String {
        u.0
    }
}
impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({})", self.0)
    }
}

/// A mainland China mobile number, 11 digits starting with 1 (a leading `+86` is accepted).
/// `Debug` and `Display` mask it (`138****0001`); [`PhoneNumber::expose`] gives the digits.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses a phone number.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let t: String = s.trim().chars().filter(|c| *c != ' ' && *c != '-').collect();
        let t = t.strip_prefix("+86").unwrap_or(&t);
        if t.len() == 11 && t.starts_with('1') && t.chars().all(|c| c.is_ascii_digit()) {
            Ok(PhoneNumber(t.to_string()))
        } else {
            Err(DomainError::invalid("phone", "an 11-digit mobile number starting with 1"))
        }
    }
    /// The digits, for storage and for the code sender only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Masked form for logs and listings.
    pub fn masked(&self) -> String {
        format!("{}****{}", &self.0[..3], &self.0[7..])
    }
}
impl TryFrom<String> for PhoneNumber {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PhoneNumber::parse(&s)
    }
}
impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}
impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}
impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// A resident identity card number (18 characters, GB 11643 check digit verified).
/// `Debug` and `Display` mask it; [`IdNumber::expose`] is for storage only.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdNumber(String);

impl IdNumber {
    /// Parses an ID number and checks its check digit.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let t = s.trim().to_ascii_uppercase();
        let bad = || DomainError::invalid("id_number", "an 18-character resident ID number with a valid check digit");
        if t.len() != 18 {
            return Err(bad());
        }
        let bytes = t.as_bytes();
        if !bytes[..17].iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
        const C: &[u8; 11] = b"10X98765432";
        let sum: u32 = bytes[..17].iter().zip(W).map(|(b, w)| (b - b'0') as u32 * w).sum();
        if bytes[17] != C[(sum % 11) as usize] {
            return Err(bad());
        }
        Ok(IdNumber(t))
    }
    /// The full number, for storage only.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Masked form: region code and last four kept (`330106********123X`).
    pub fn masked(&self) -> String {
        format!("{}********{}", &self.0[..6], &self.0[14..])
    }
    /// The birth date the number encodes (characters 7 to 14, `YYYYMMDD`), if it is a date.
    pub fn birth_date(&self) -> Option<time::Date> {
        let digits = &self.0[6..14];
        let year: i32 = digits[..4].parse().ok()?;
        let month: u8 = digits[4..6].parse().ok()?;
        let day: u8 = digits[6..].parse().ok()?;
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day).ok()
    }
}
impl TryFrom<String> for IdNumber {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        IdNumber::parse(&s)
    }
}
impl From<IdNumber> for String {
    fn from(p: IdNumber) -> String {
        p.0
    }
}
impl fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdNumber({})", self.masked())
    }
}
impl fmt::Display for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Masks an already-stored ID number without re-validating it.
pub fn mask_id_number(s: &str) -> String {
    match IdNumber::parse(s) {
        Ok(id) => id.masked(),
        Err(_) => "*".repeat(s.chars().count().min(18)),
    }
}

/// Masks an already-stored phone number without re-validating it.
pub fn mask_phone(s: &str) -> String {
    match PhoneNumber::parse(s) {
        Ok(p) => p.masked(),
        Err(_) => "*".repeat(s.chars().count().min(11)),
    }
}

/// A staff password as typed. Never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Accepts a new password: 10 to 128 characters.
    pub fn new_checked(s: String) -> Result<Self, DomainError> {
        let n = s.chars().count();
        if !(10..=128).contains(&n) {
            return Err(DomainError::invalid("password", "10 to 128 characters"));
        }
        Ok(Password(s))
    }
    /// Wraps a password typed at sign-in (not checked against the policy).
    pub fn typed(s: String) -> Self {
        Password(s)
    }
    /// The secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Failed sign-in state of a staff account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoginFailures {
    /// Consecutive failures.
    pub count: u32,
    /// Locked until this time (Unix ms), if locked.
    pub locked_until: Option<Millis>,
}

/// How many consecutive failures are free before the account locks.
pub const FREE_FAILURES: u32 = 5;
/// The longest lock, in ms (one hour).
pub const MAX_LOCK_MS: i64 = 60 * 60 * 1000;

impl LoginFailures {
    /// Is a sign-in attempt refused right now, and until when?
    pub fn locked_at(&self, now: Millis) -> Option<Millis> {
        self.locked_until.filter(|until| *until > now)
    }

    /// The state after one more failed attempt: after [`FREE_FAILURES`] failures the account
    /// locks for one minute, doubling with every further failure, up to an hour.
    pub fn after_failure(self, now: Millis) -> LoginFailures {
        let count = self.count.saturating_add(1);
        let locked_until = if count >= FREE_FAILURES {
            let exp = (count - FREE_FAILURES).min(10);
            let lock = (60_000i64 << exp).min(MAX_LOCK_MS);
            Some(now + lock)
        } else {
            None
        };
        LoginFailures { count, locked_until }
    }
}

/// One-time sign-in code policy for residents.
pub mod otp {
    use super::Millis;

    /// Digits in a code.
    pub const CODE_DIGITS: usize = 6;
    /// How long a code is valid.
    pub const TTL_MS: i64 = 5 * 60 * 1000;
    /// Wrong guesses allowed per code before it is burnt.
    pub const MAX_ATTEMPTS: u32 = 5;
    /// Minimum time between two codes sent to one phone.
    pub const RESEND_AFTER_MS: i64 = 60 * 1000;

    /// A stored challenge.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Challenge {
        /// Keyed hash of the code.
        pub code_hash: String,
        /// When it was sent.
        pub sent_at: Millis,
        /// When it stops being valid.
        pub expires_at: Millis,
        /// Wrong guesses so far.
        pub attempts: u32,
    }

    /// Result of checking a guess.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Verdict {
        /// The code is right and valid.
        Accepted,
        /// Wrong code; it may be tried again.
        Wrong,
        /// Expired, burnt by too many attempts, or never sent.
        Expired,
    }

    /// May a new code be sent now?
    pub fn may_resend(existing: Option<&Challenge>, now: Millis) -> bool {
        existing.is_none_or(|c| now - c.sent_at >= RESEND_AFTER_MS)
    }

    /// Checks a guess (given as its keyed hash) against the challenge.
    pub fn check(ch: Option<&Challenge>, guess_hash: &str, now: Millis) -> Verdict {
        match ch {
            None => Verdict::Expired,
            Some(c) if c.expires_at <= now || c.attempts >= MAX_ATTEMPTS => Verdict::Expired,
            Some(c) if constant_time_eq(c.code_hash.as_bytes(), guess_hash.as_bytes()) => Verdict::Accepted,
            Some(_) => Verdict::Wrong,
        }
    }

    fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Age in whole years on a date, from a birth date (both `YYYY-MM-DD`-ish triples).
pub fn age_on(birth: time::Date, on: time::Date) -> i32 {
    let mut age = on.year() - birth.year();
    if (on.month() as u8, on.day()) < (birth.month() as u8, birth.day()) {
        age -= 1;
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_number_check_digit_is_verified_and_masked() {
        let id = IdNumber::parse("11010519491231002X").unwrap();
        assert_eq!(id.masked(), "110105********002X");
        assert_eq!(format!("{id:?}"), "IdNumber(110105********002X)");
        assert!(IdNumber::parse("110105194912310021").is_err());
        assert!(IdNumber::parse("1101051949123100").is_err());
    }

    #[test]
    fn id_numbers_tell_their_birth_date() {
        let id = IdNumber::parse("11010519491231002X").unwrap();
        assert_eq!(id.birth_date(), Some(time::macros::date!(1949 - 12 - 31)));
    }

    #[test]
    fn phone_numbers_are_masked_when_printed() {
        let p = PhoneNumber::parse("+86 138-0000-0001").unwrap();
        assert_eq!(p.expose(), "13800000001");
        assert_eq!(format!("{p} {p:?}"), "138****0001 PhoneNumber(138****0001)");
        assert!(PhoneNumber::parse("23800000001").is_err());
        assert!(PhoneNumber::parse("1380000000").is_err());
    }

    #[test]
    fn lockout_starts_after_five_failures_and_doubles_to_an_hour() {
        let mut f = LoginFailures::default();
        for _ in 0..4 {
            f = f.after_failure(0);
            assert_eq!(f.locked_at(0), None);
        }
        f = f.after_failure(1000);
        assert_eq!(f.locked_at(1000), Some(61_000));
        assert_eq!(f.locked_at(61_000), None);
        f = f.after_failure(61_000);
        assert_eq!(f.locked_until, Some(61_000 + 120_000));
        for _ in 0..20 {
            f = f.after_failure(0);
        }
        assert_eq!(f.locked_until, Some(MAX_LOCK_MS));
    }

    #[test]
    fn otp_codes_expire_and_burn_after_attempts() {
        let ch = otp::Challenge { code_hash: "h".into(), sent_at: 0, expires_at: otp::TTL_MS, attempts: 0 };
        assert_eq!(otp::check(Some(&ch), "h", 1), otp::Verdict::Accepted);
        assert_eq!(otp::check(Some(&ch), "x", 1), otp::Verdict::Wrong);
        assert_eq!(otp::check(Some(&ch), "h", otp::TTL_MS), otp::Verdict::Expired);
        let burnt = otp::Challenge { attempts: otp::MAX_ATTEMPTS, ..ch.clone() };
        assert_eq!(otp::check(Some(&burnt), "h", 1), otp::Verdict::Expired);
        assert!(!otp::may_resend(Some(&ch), 59_999));
        assert!(otp::may_resend(Some(&ch), 60_000));
    }

    #[test]
    fn age_counts_whole_years() {
        use time::macros::date;
        assert_eq!(age_on(date!(1960 - 06 - 15), date!(2020 - 06 - 14)), 59);
        assert_eq!(age_on(date!(1960 - 06 - 15), date!(2020 - 06 - 15)), 60);
    }
}
