//! The SQL implementations. Both backends run the same statements (`$n` parameters, ids as
//! UUIDs, times as Unix ms, JSON as text); the macro below stamps the one body out for each
//! pool type, so a fix lands in both. Backend-specific SQL lives in the migrations.

use async_trait::async_trait;
use sqlx::FromRow;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

use super::{Pairing, RotateOutcome, SessionRecord, Store, StoreError, StoreResult};
use crate::domain::clock::{format_date, Millis};
use crate::domain::identity::{otp::Challenge, IdNumber, LoginFailures, PhoneNumber, Role, Username};
use crate::domain::ids::{DeviceId, PairingId, ResidentId, SessionId, StaffId};
use crate::domain::matter::{Matter, MatterClass, MatterSpec};
use crate::domain::people::{Actor, AuditEntry, Device, DeviceKind, Grid, Resident, Staff};

fn corrupt(what: &str) -> StoreError {
    StoreError::Db(format!("unreadable stored {what}"))
}

#[derive(FromRow)]
struct StaffRow {
    id: Uuid,
    username: String,
    display_name: String,
    role: String,
    skills: String,
    grid_id: Option<Uuid>,
    password_hash: String,
    failed_logins: i64,
    locked_until: Option<i64>,
    disabled: bool,
    created_at: i64,
}

impl TryFrom<StaffRow> for Staff {
    type Error = StoreError;
    fn try_from(r: StaffRow) -> StoreResult<Staff> {
        Ok(Staff {
            id: StaffId(r.id),
            username: Username::parse(&r.username).map_err(|_| corrupt("username"))?,
            display_name: r.display_name,
            role: Role::parse(&r.role).ok_or_else(|| corrupt("role"))?,
            skills: serde_json::from_str(&r.skills).map_err(|_| corrupt("skills"))?,
            grid_id: r.grid_id.map(Into::into),
            password_hash: r.password_hash,
            failed_logins: r.failed_logins.clamp(0, u32::MAX as i64) as u32,
            locked_until: r.locked_until,
            disabled: r.disabled,
            created_at: r.created_at,
        })
    }
}

#[derive(FromRow)]
struct ResidentRow {
    id: Uuid,
    name: String,
    phone: String,
    id_number: Option<String>,
    birth_date: Option<String>,
    elderly: bool,
    disabled: bool,
    grid_id: Option<Uuid>,
    created_at: i64,
}

const DATE: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");


impl TryFrom<ResidentRow> for Resident {
    type Error = StoreError;
    fn try_from(r: ResidentRow) -> StoreResult<Resident> {
        Ok(Resident {
            id: ResidentId(r.id),
            name: r.name,
            phone: PhoneNumber::parse(&r.phone).map_err(|_| corrupt("phone"))?,
            id_number: r.id_number.map(|s| IdNumber::parse(&s)).transpose().map_err(|_| corrupt("id number"))?,
            birth_date: r
                .birth_date
                .map(|s| time::Date::parse(&s, DATE))
                .transpose()
                .map_err(|_| corrupt("birth date"))?,
            elderly: r.elderly,
            disabled: r.disabled,
            grid_id: r.grid_id.map(Into::into),
            created_at: r.created_at,
        })
    }
}

#[derive(FromRow)]
struct DeviceRow {
    id: Uuid,
    kind: String,
    label: String,
    grid_id: Option<Uuid>,
    revoked: bool,
    created_at: i64,
    last_seen_at: Option<i64>,
}

impl TryFrom<DeviceRow> for Device {
    type Error = StoreError;
    fn try_from(r: DeviceRow) -> StoreResult<Device> {
        Ok(Device {
            id: DeviceId(r.id),
            kind: DeviceKind::parse(&r.kind).ok_or_else(|| corrupt("device kind"))?,
            label: r.label,
            grid_id: r.grid_id.map(Into::into),
            revoked: r.revoked,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
        })
    }
}

#[derive(FromRow)]
struct PairingRow {
    id: Uuid,
    code: String,
    kind: String,
    label: String,
    poll_secret_hash: String,
    created_at: i64,
    expires_at: i64,
    confirmed_at: Option<i64>,
    device_id: Option<Uuid>,
}

impl TryFrom<PairingRow> for Pairing {
    type Error = StoreError;
    fn try_from(r: PairingRow) -> StoreResult<Pairing> {
        Ok(Pairing {
            id: PairingId(r.id),
            code: r.code,
            kind: DeviceKind::parse(&r.kind).ok_or_else(|| corrupt("device kind"))?,
            label: r.label,
            poll_secret_hash: r.poll_secret_hash,
            created_at: r.created_at,
            expires_at: r.expires_at,
            confirmed_at: r.confirmed_at,
            device_id: r.device_id.map(Into::into),
        })
    }
}

#[derive(FromRow)]
struct SessionRow {
    id: Uuid,
    subject: Uuid,
    role: String,
    refresh_hash: String,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<SessionRow> for SessionRecord {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> StoreResult<SessionRecord> {
        Ok(SessionRecord {
            id: SessionId(r.id),
            subject: r.subject,
            role: Role::parse(&r.role).ok_or_else(|| corrupt("role"))?,
            refresh_hash: r.refresh_hash,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

#[derive(FromRow)]
struct MatterRow {
    spec: String,
    version: i64,
    active: bool,
    updated_at: i64,
}

impl TryFrom<MatterRow> for Matter {
    type Error = StoreError;
    fn try_from(r: MatterRow) -> StoreResult<Matter> {
        Ok(Matter {
            spec: serde_json::from_str(&r.spec).map_err(|_| corrupt("matter"))?,
            version: r.version,
            active: r.active,
            updated_at: r.updated_at,
        })
    }
}

#[derive(FromRow)]
struct ClassRow {
    code: String,
    name_zh: String,
    name_en: String,
}

#[derive(FromRow)]
struct GridRow {
    id: Uuid,
    code: String,
    name: String,
}

#[derive(FromRow)]
struct AuditRow {
    id: Uuid,
    at: i64,
    actor_id: Option<Uuid>,
    actor_role: Option<String>,
    action: String,
    target_kind: String,
    target_id: String,
    detail: String,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> StoreResult<AuditEntry> {
        Ok(AuditEntry {
            id: r.id.into(),
            at: r.at,
            actor: Actor { id: r.actor_id, role: r.actor_role.as_deref().and_then(Role::parse) },
            action: r.action,
            target_kind: r.target_kind,
            target_id: r.target_id,
            detail: serde_json::from_str(&r.detail).map_err(|_| corrupt("audit detail"))?,
        })
    }
}

const STAFF_COLS: &str = "id, username, display_name, role, skills, grid_id, password_hash, failed_logins, locked_until, disabled, created_at";
const RESIDENT_COLS: &str = "id, name, phone, id_number, birth_date, elderly, disabled, grid_id, created_at";
const DEVICE_COLS: &str = "id, kind, label, grid_id, revoked, created_at, last_seen_at";
const PAIRING_COLS: &str = "id, code, kind, label, poll_secret_hash, created_at, expires_at, confirmed_at, device_id";
const SESSION_COLS: &str = "id, subject, role, refresh_hash, created_at, expires_at, revoked_at";

/// A nil UUID sorts before every v7 id: the cursor for "from the start".
fn cursor(after: Option<Uuid>) -> Uuid {
    after.unwrap_or(Uuid::nil())
}

macro_rules! sql_store {
    ($(#[$doc:meta])* $name:ident, $pool:ty, $backend:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name {
            pub(crate) pool: $pool,
            /// Queue writers of this process take turns here before they open a write
            /// transaction (SQLite: instead of spinning in the busy handler; see
            /// `store::queue::WriteTx`). PostgreSQL locks rows and does not use it.
            #[allow(dead_code)]
            pub(crate) writer: std::sync::Arc<tokio::sync::Mutex<()>>,
        }

        impl $name {
            /// The connection pool (tests and maintenance).
            pub fn pool(&self) -> &$pool {
                &self.pool
            }
        }

        #[async_trait]
        impl Store for $name {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn insert_grid(&self, g: &Grid) -> StoreResult<()> {
                sqlx::query("INSERT INTO grids (id, code, name) VALUES ($1, $2, $3)")
                    .bind(g.id.0)
                    .bind(&g.code)
                    .bind(&g.name)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn list_grids(&self) -> StoreResult<Vec<Grid>> {
                let rows: Vec<GridRow> = sqlx::query_as("SELECT id, code, name FROM grids ORDER BY code")
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(|r| Grid { id: r.id.into(), code: r.code, name: r.name }).collect())
            }

            async fn insert_staff(&self, s: &Staff) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO staff ({STAFF_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .bind(s.id.0)
                .bind(s.username.as_str())
                .bind(&s.display_name)
                .bind(s.role.as_str())
                .bind(serde_json::to_string(&s.skills).unwrap_or_else(|_| "[]".into()))
                .bind(s.grid_id.map(|g| g.0))
                .bind(&s.password_hash)
                .bind(s.failed_logins as i64)
                .bind(s.locked_until)
                .bind(s.disabled)
                .bind(s.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn staff_by_username(&self, u: &Username) -> StoreResult<Option<Staff>> {
                let row: Option<StaffRow> =
                    sqlx::query_as(&format!("SELECT {STAFF_COLS} FROM staff WHERE username = $1"))
                        .bind(u.as_str())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn staff_by_id(&self, id: StaffId) -> StoreResult<Option<Staff>> {
                let row: Option<StaffRow> =
                    sqlx::query_as(&format!("SELECT {STAFF_COLS} FROM staff WHERE id = $1"))
                        .bind(id.0)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_staff(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Staff>> {
                let rows: Vec<StaffRow> =
                    sqlx::query_as(&format!("SELECT {STAFF_COLS} FROM staff WHERE id > $1 ORDER BY id LIMIT $2"))
                        .bind(cursor(after))
                        .bind(limit as i64)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn set_login_failures(&self, id: StaffId, f: LoginFailures) -> StoreResult<()> {
                sqlx::query("UPDATE staff SET failed_logins = $1, locked_until = $2 WHERE id = $3")
                    .bind(f.count as i64)
                    .bind(f.locked_until)
                    .bind(id.0)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn count_login_failure(&self, id: StaffId, now: Millis) -> StoreResult<Option<LoginFailures>> {
                // The increment is relative (`failed_logins + 1`) and holds the row's write lock
                // until the lock time is stored, so concurrent failures are counted one by one.
                let mut tx = self.pool.begin().await?;
                let row: Option<(i64, Option<i64>)> = sqlx::query_as(
                    "UPDATE staff SET failed_logins = failed_logins + 1 WHERE id = $1 \
                     RETURNING failed_logins, locked_until",
                )
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((count, locked_until)) = row else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                let before = LoginFailures {
                    count: (count - 1).clamp(0, u32::MAX as i64) as u32,
                    locked_until,
                };
                let next = before.after_failure(now);
                sqlx::query("UPDATE staff SET locked_until = $1 WHERE id = $2")
                    .bind(next.locked_until)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some(next))
            }

            async fn insert_resident(&self, r: &Resident) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO residents ({RESIDENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ))
                .bind(r.id.0)
                .bind(&r.name)
                .bind(r.phone.expose())
                .bind(r.id_number.as_ref().map(|i| i.expose().to_string()))
                .bind(r.birth_date.map(format_date))
                .bind(r.elderly)
                .bind(r.disabled)
                .bind(r.grid_id.map(|g| g.0))
                .bind(r.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn resident_by_id(&self, id: ResidentId) -> StoreResult<Option<Resident>> {
                let row: Option<ResidentRow> =
                    sqlx::query_as(&format!("SELECT {RESIDENT_COLS} FROM residents WHERE id = $1"))
                        .bind(id.0)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn resident_by_phone(&self, p: &PhoneNumber) -> StoreResult<Option<Resident>> {
                let row: Option<ResidentRow> =
                    sqlx::query_as(&format!("SELECT {RESIDENT_COLS} FROM residents WHERE phone = $1"))
                        .bind(p.expose())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_residents(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Resident>> {
                let rows: Vec<ResidentRow> = sqlx::query_as(&format!(
                    "SELECT {RESIDENT_COLS} FROM residents WHERE id > $1 ORDER BY id LIMIT $2"
                ))
                .bind(cursor(after))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn update_resident(&self, r: &Resident) -> StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE residents SET name = $1, id_number = $2, birth_date = $3, elderly = $4, \
                     disabled = $5, grid_id = $6 WHERE id = $7",
                )
                .bind(&r.name)
                .bind(r.id_number.as_ref().map(|i| i.expose().to_string()))
                .bind(r.birth_date.map(format_date))
                .bind(r.elderly)
                .bind(r.disabled)
                .bind(r.grid_id.map(|g| g.0))
                .bind(r.id.0)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn otp_get(&self, phone: &PhoneNumber) -> StoreResult<Option<Challenge>> {
                let row: Option<(String, i64, i64, i64)> = sqlx::query_as(
                    "SELECT code_hash, sent_at, expires_at, attempts FROM otp_challenges WHERE phone = $1",
                )
                .bind(phone.expose())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(code_hash, sent_at, expires_at, attempts)| Challenge {
                    code_hash,
                    sent_at,
                    expires_at,
                    attempts: attempts.clamp(0, u32::MAX as i64) as u32,
                }))
            }

            async fn otp_put(&self, phone: &PhoneNumber, c: &Challenge) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO otp_challenges (phone, code_hash, sent_at, expires_at, attempts) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (phone) DO UPDATE SET \
                     code_hash = excluded.code_hash, sent_at = excluded.sent_at, \
                     expires_at = excluded.expires_at, attempts = excluded.attempts",
                )
                .bind(phone.expose())
                .bind(&c.code_hash)
                .bind(c.sent_at)
                .bind(c.expires_at)
                .bind(c.attempts as i64)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn otp_take_attempt(
                &self,
                phone: &PhoneNumber,
                max_attempts: u32,
                now: Millis,
            ) -> StoreResult<Option<Challenge>> {
                // Check and count are one statement: the row changes only while fewer than
                // `max_attempts` guesses were counted, so parallel guesses cannot overrun it.
                let row: Option<(String, i64, i64, i64)> = sqlx::query_as(
                    "UPDATE otp_challenges SET attempts = attempts + 1 \
                     WHERE phone = $1 AND attempts < $2 AND expires_at > $3 \
                     RETURNING code_hash, sent_at, expires_at, attempts",
                )
                .bind(phone.expose())
                .bind(max_attempts as i64)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(code_hash, sent_at, expires_at, attempts)| Challenge {
                    code_hash,
                    sent_at,
                    expires_at,
                    // As it was before this guess.
                    attempts: (attempts - 1).clamp(0, u32::MAX as i64) as u32,
                }))
            }

            async fn otp_consume(&self, phone: &PhoneNumber, code_hash: &str) -> StoreResult<bool> {
                // The affected-row count picks the single winner of concurrent right guesses.
                let done = sqlx::query("DELETE FROM otp_challenges WHERE phone = $1 AND code_hash = $2")
                    .bind(phone.expose())
                    .bind(code_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn otp_delete(&self, phone: &PhoneNumber) -> StoreResult<()> {
                sqlx::query("DELETE FROM otp_challenges WHERE phone = $1")
                    .bind(phone.expose())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn insert_session(&self, s: &SessionRecord) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO sessions ({SESSION_COLS}) VALUES ($1, $2, $3, $4, $5, $6, NULL)"
                ))
                .bind(s.id.0)
                .bind(s.subject)
                .bind(s.role.as_str())
                .bind(&s.refresh_hash)
                .bind(s.created_at)
                .bind(s.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn rotate_session(
                &self,
                presented_hash: &str,
                new_hash: &str,
                now: Millis,
                new_expires: Millis,
            ) -> StoreResult<RotateOutcome> {
                // The conditional UPDATE is the claim: of two concurrent refreshes with the same
                // token, exactly one changes the row.
                let done = sqlx::query(
                    "UPDATE sessions SET previous_hash = refresh_hash, refresh_hash = $1, expires_at = $2 \
                     WHERE refresh_hash = $3 AND revoked_at IS NULL AND expires_at > $4",
                )
                .bind(new_hash)
                .bind(new_expires)
                .bind(presented_hash)
                .bind(now)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 1 {
                    let row: SessionRow =
                        sqlx::query_as(&format!("SELECT {SESSION_COLS} FROM sessions WHERE refresh_hash = $1"))
                            .bind(new_hash)
                            .fetch_one(&self.pool)
                            .await?;
                    return Ok(RotateOutcome::Rotated(row.try_into()?));
                }
                let reused = sqlx::query(
                    "UPDATE sessions SET revoked_at = $1 WHERE previous_hash = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(presented_hash)
                .execute(&self.pool)
                .await?;
                Ok(if reused.rows_affected() > 0 { RotateOutcome::Reused } else { RotateOutcome::Invalid })
            }

            async fn revoke_session(&self, id: SessionId, now: Millis) -> StoreResult<()> {
                sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                    .bind(now)
                    .bind(id.0)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn insert_pairing(&self, p: &Pairing) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                // Expired, unconfirmed attempts free their codes.
                sqlx::query("DELETE FROM device_pairings WHERE confirmed_at IS NULL AND expires_at <= $1")
                    .bind(p.created_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!(
                    "INSERT INTO device_pairings ({PAIRING_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL)"
                ))
                .bind(p.id.0)
                .bind(&p.code)
                .bind(p.kind.as_str())
                .bind(&p.label)
                .bind(&p.poll_secret_hash)
                .bind(p.created_at)
                .bind(p.expires_at)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn pairing_by_id(&self, id: PairingId) -> StoreResult<Option<Pairing>> {
                let row: Option<PairingRow> =
                    sqlx::query_as(&format!("SELECT {PAIRING_COLS} FROM device_pairings WHERE id = $1"))
                        .bind(id.0)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn confirm_pairing(
                &self,
                code: &str,
                now: Millis,
                by: StaffId,
                device: &Device,
            ) -> StoreResult<Option<(Pairing, Device)>> {
                let mut tx = self.pool.begin().await?;
                let pending: Option<PairingRow> = sqlx::query_as(&format!(
                    "SELECT {PAIRING_COLS} FROM device_pairings \
                     WHERE code = $1 AND confirmed_at IS NULL AND expires_at > $2 AND kind = $3"
                ))
                .bind(code)
                .bind(now)
                .bind(device.kind.as_str())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(pending) = pending else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                let mut device = device.clone();
                if device.label.is_empty() {
                    device.label = pending.label.clone();
                }
                sqlx::query(&format!(
                    "INSERT INTO devices ({DEVICE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ))
                .bind(device.id.0)
                .bind(device.kind.as_str())
                .bind(&device.label)
                .bind(device.grid_id.map(|g| g.0))
                .bind(device.revoked)
                .bind(device.created_at)
                .bind(device.last_seen_at)
                .execute(&mut *tx)
                .await?;
                // The conditional UPDATE is the claim: a concurrent confirmation of the same
                // code changes no row and rolls back.
                let row: Option<PairingRow> = sqlx::query_as(&format!(
                    "UPDATE device_pairings SET confirmed_at = $1, confirmed_by = $2, device_id = $3 \
                     WHERE id = $4 AND confirmed_at IS NULL RETURNING {PAIRING_COLS}"
                ))
                .bind(now)
                .bind(by.0)
                .bind(device.id.0)
                .bind(pending.id)
                .fetch_optional(&mut *tx)
                .await?;
                match row {
                    Some(r) => {
                        tx.commit().await?;
                        Ok(Some((r.try_into()?, device)))
                    }
                    None => {
                        tx.rollback().await?;
                        Ok(None)
                    }
                }
            }

            async fn insert_device(&self, d: &Device) -> StoreResult<()> {
                sqlx::query(&format!("INSERT INTO devices ({DEVICE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"))
                    .bind(d.id.0)
                    .bind(d.kind.as_str())
                    .bind(&d.label)
                    .bind(d.grid_id.map(|g| g.0))
                    .bind(d.revoked)
                    .bind(d.created_at)
                    .bind(d.last_seen_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_device_token(&self, id: DeviceId, token_hash: &str) -> StoreResult<()> {
                let done = sqlx::query("UPDATE devices SET token_hash = $1 WHERE id = $2 AND revoked = FALSE")
                    .bind(token_hash)
                    .bind(id.0)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            }

            async fn device_by_token(&self, token_hash: &str, now: Millis) -> StoreResult<Option<Device>> {
                let row: Option<DeviceRow> = sqlx::query_as(&format!(
                    "UPDATE devices SET last_seen_at = $1 WHERE token_hash = $2 AND revoked = FALSE \
                     RETURNING {DEVICE_COLS}"
                ))
                .bind(now)
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn device_by_id(&self, id: DeviceId) -> StoreResult<Option<Device>> {
                let row: Option<DeviceRow> =
                    sqlx::query_as(&format!("SELECT {DEVICE_COLS} FROM devices WHERE id = $1"))
                        .bind(id.0)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_devices(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<Device>> {
                let rows: Vec<DeviceRow> =
                    sqlx::query_as(&format!("SELECT {DEVICE_COLS} FROM devices WHERE id > $1 ORDER BY id LIMIT $2"))
                        .bind(cursor(after))
                        .bind(limit as i64)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn revoke_device(&self, id: DeviceId) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE devices SET revoked = TRUE, token_hash = NULL WHERE id = $1")
                    .bind(id.0)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn upsert_class(&self, c: &MatterClass) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO matter_classes (code, name_zh, name_en) VALUES ($1, $2, $3) \
                     ON CONFLICT (code) DO UPDATE SET name_zh = excluded.name_zh, name_en = excluded.name_en",
                )
                .bind(&c.code)
                .bind(&c.name_zh)
                .bind(&c.name_en)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_classes(&self) -> StoreResult<Vec<MatterClass>> {
                let rows: Vec<ClassRow> =
                    sqlx::query_as("SELECT code, name_zh, name_en FROM matter_classes ORDER BY code")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| MatterClass { code: r.code, name_zh: r.name_zh, name_en: r.name_en })
                    .collect())
            }

            async fn insert_matter(&self, m: &MatterSpec, now: Millis) -> StoreResult<Matter> {
                let spec = serde_json::to_string(m).map_err(|e| StoreError::Db(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO matters (code, class_code, spec, version, active, updated_at) \
                     VALUES ($1, $2, $3, 1, TRUE, $4)",
                )
                .bind(&m.code)
                .bind(&m.class)
                .bind(spec)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(Matter { spec: m.clone(), version: 1, active: true, updated_at: now })
            }

            async fn update_matter(
                &self,
                m: &MatterSpec,
                active: bool,
                expected_version: Option<i64>,
                now: Millis,
            ) -> StoreResult<Matter> {
                let spec = serde_json::to_string(m).map_err(|e| StoreError::Db(e.to_string()))?;
                let row: Option<(i64,)> = sqlx::query_as(
                    "UPDATE matters SET class_code = $1, spec = $2, active = $3, updated_at = $4, \
                     version = version + 1 WHERE code = $5 AND ($6 IS NULL OR version = $6) RETURNING version",
                )
                .bind(&m.class)
                .bind(spec)
                .bind(active)
                .bind(now)
                .bind(&m.code)
                .bind(expected_version)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some((version,)) => Ok(Matter { spec: m.clone(), version, active, updated_at: now }),
                    None if self.matter(&m.code).await?.is_some() => Err(StoreError::Conflict("version")),
                    None => Err(StoreError::NotFound),
                }
            }

            async fn matter(&self, code: &str) -> StoreResult<Option<Matter>> {
                let row: Option<MatterRow> =
                    sqlx::query_as("SELECT spec, version, active, updated_at FROM matters WHERE code = $1")
                        .bind(code)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_matters(&self, class: Option<&str>) -> StoreResult<Vec<Matter>> {
                let rows: Vec<MatterRow> = sqlx::query_as(
                    "SELECT spec, version, active, updated_at FROM matters \
                     WHERE ($1 IS NULL OR class_code = $1) ORDER BY code",
                )
                .bind(class)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn append_audit(&self, e: &AuditEntry) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO audit_log (id, at, actor_id, actor_role, action, target_kind, target_id, detail) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(e.id.0)
                .bind(e.at)
                .bind(e.actor.id)
                .bind(e.actor.role.map(Role::as_str))
                .bind(&e.action)
                .bind(&e.target_kind)
                .bind(&e.target_id)
                .bind(e.detail.to_string())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_audit(&self, after: Option<Uuid>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
                let rows: Vec<AuditRow> = sqlx::query_as(
                    "SELECT id, at, actor_id, actor_role, action, target_kind, target_id, detail \
                     FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(cursor(after))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }
        }
    };
}

sql_store!(
    /// The embedded default: SQLite in WAL mode, one file under the data directory.
    SqliteStore,
    sqlx::SqlitePool,
    "sqlite"
);
sql_store!(
    /// PostgreSQL: the system of record when several nodes run.
    PgStore,
    sqlx::PgPool,
    "postgres"
);

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and migrates it.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool, writer: Default::default() })
    }
}

impl PgStore {
    /// Connects to PostgreSQL at `url` and migrates the database.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool, writer: Default::default() })
    }
}
