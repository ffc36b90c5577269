//! Demo mode (`--demo`): seeds staff for every role, grids, residents (one elderly, one
//! disabled) and a paired kiosk and TV box, then prints how to sign in as each. Running it
//! again re-prints the same accounts and issues fresh device tokens.

use crate::app::AppState;
use crate::auth::{hash_password, random_token};
use crate::domain::identity::{IdNumber, PhoneNumber, Role, Username};
use crate::domain::ids::{DeviceId, GridId, ResidentId, StaffId};
use crate::domain::people::{Actor, Device, DeviceKind, Grid, Resident, Staff};

/// The password of every demo staff account.
pub const DEMO_PASSWORD: &str = "demo-pass-2026";

/// Demo staff: username, display name, role, skills.
pub const DEMO_STAFF: &[(&str, &str, Role, &[&str])] = &[
    ("admin", "系统管理员 Admin", Role::Admin, &[]),
    ("agent.li", "李晓 Li Xiao (人社/医保)", Role::Agent, &["social_insurance", "medical_insurance"]),
    ("agent.wang", "王芳 Wang Fang (市民卡/小客车)", Role::Agent, &["citizen_card", "car_quota", "traffic"]),
    ("helper.zhao", "赵网格员 Zhao (网格员)", Role::Helper, &[]),
    ("supervisor", "陈科长 Chen (值班长)", Role::Supervisor, &[]),
    ("auditor", "审计员 Auditor", Role::Auditor, &[]),
];

/// Demo residents: name, phone, ID number, birth date, elderly, disabled.
pub const DEMO_RESIDENTS: &[(&str, &str, &str, &str, bool, bool)] = &[
    ("张桂英", "13800000001", "330106194503120025", "1945-03-12", true, false),
    ("刘建国", "13800000002", "330106197808150032", "1978-08-15", false, true),
    ("周婷", "13800000003", "330106199205200045", "1992-05-20", false, false),
];

/// Seeds demo data once and prints sign-in instructions.
pub async fn seed(state: &AppState) -> anyhow::Result<()> {
    let store = &state.store;
    let now = state.clock.now_ms();
    let first_run = store.staff_by_username(&Username::parse("admin")?).await?.is_none();
    if first_run {
        let grids = [
            Grid { id: GridId::new(), code: "XH-WX-001".into(), name: "西湖区文新街道 第1网格".into() },
            Grid { id: GridId::new(), code: "XH-WX-002".into(), name: "西湖区文新街道 第2网格".into() },
        ];
        for g in &grids {
            store.insert_grid(g).await?;
        }
        let hash = tokio::task::spawn_blocking(|| hash_password(DEMO_PASSWORD)).await??;
        for (username, name, role, skills) in DEMO_STAFF {
            store
                .insert_staff(&Staff {
                    id: StaffId::new(),
                    username: Username::parse(username)?,
                    display_name: name.to_string(),
                    role: *role,
                    skills: skills.iter().map(|s| s.to_string()).collect(),
                    grid_id: (*role == Role::Helper).then_some(grids[0].id),
                    password_hash: hash.clone(),
                    failed_logins: 0,
                    locked_until: None,
                    disabled: false,
                    created_at: now,
                })
                .await?;
        }
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        for (name, phone, id, birth, elderly, disabled) in DEMO_RESIDENTS {
            store
                .insert_resident(&Resident {
                    id: ResidentId::new(),
                    name: name.to_string(),
                    phone: PhoneNumber::parse(phone)?,
                    id_number: Some(IdNumber::parse(&fix_check_digit(id))?),
                    birth_date: Some(time::Date::parse(birth, fmt)?),
                    elderly: *elderly,
                    disabled: *disabled,
                    grid_id: Some(grids[0].id),
                    created_at: now,
                })
                .await?;
        }
        for (kind, label) in [
            (DeviceKind::Kiosk, "文新街道便民服务中心 自助机 1号"),
            (DeviceKind::TvBox, "张桂英家 电视机顶盒"),
        ] {
            let d = Device {
                id: DeviceId::new(),
                kind,
                label: label.into(),
                grid_id: Some(grids[0].id),
                revoked: false,
                created_at: now,
                last_seen_at: None,
            };
            store.insert_device(&d).await?;
        }
        state.audit(Actor::SYSTEM, "demo.seed", "system", "-", serde_json::json!({})).await?;
    }
    let mut lines = vec![
        String::new(),
        "==================== DEMO MODE — not for production ====================".to_string(),
        format!("Staff (password for all: {DEMO_PASSWORD}):  POST /api/v1/auth/staff/login"),
    ];
    for (username, name, role, _) in DEMO_STAFF {
        lines.push(format!("  {:<12} {:<10} {}", username, role.as_str(), name));
    }
    lines.push("Residents: POST /api/v1/auth/otp/request {\"phone\"}, the code appears in this log,".into());
    lines.push("           then POST /api/v1/auth/otp/verify {\"phone\",\"code\"}".into());
    for (name, phone, _, _, elderly, disabled) in DEMO_RESIDENTS {
        let tag = if *elderly { "elderly" } else if *disabled { "disabled" } else { "" };
        lines.push(format!("  {phone}  {name} {tag}"));
    }
    lines.push("Devices (fresh tokens each start): POST /api/v1/auth/device {\"device_token\"}".into());
    for d in store.list_devices(None, 50).await? {
        if d.revoked {
            continue;
        }
        let token = random_token();
        store.set_device_token(d.id, &state.hasher.hash("device", &token)).await?;
        lines.push(format!("  {:<7} {}  token: {token}", d.kind.as_str(), d.label));
    }
    lines.push("=========================================================================".into());
    if state.settings.log_format == crate::config::LogFormat::Json {
        // One JSON line like every other, for log collectors that read JSON only.
        tracing::warn!(target: "demo", banner = %lines.join("\n"), "DEMO MODE: how to sign in");
    } else {
        println!("{}", lines.join("\n"));
    }
    Ok(())
}

/// Demo ID numbers are written without a valid check digit; compute it.
fn fix_check_digit(id: &str) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const C: &[u8; 11] = b"10X98765432";
    let body = &id[..17];
    let sum: u32 = body.bytes().zip(W).map(|(b, w)| (b - b'0') as u32 * w).sum();
    format!("{body}{}", C[(sum % 11) as usize] as char)
}
