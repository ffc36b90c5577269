//! Queue settings (flattened into the server's [`Settings`](crate::config::Settings)).

use clap::Args;

/// Queue and dispatch settings.
#[derive(Debug, Clone, Args)]
pub struct QueueSettings {
    /// Seconds an offer waits for the agent to accept before it goes to the next agent.
    #[arg(long, env = "CW_OFFER_TIMEOUT_SECS", default_value_t = 20)]
    pub offer_timeout_secs: u64,
    /// Seconds after which a waiting ticket may go to the broader pool of agents.
    #[arg(long, env = "CW_QUEUE_WIDEN_AFTER_SECS", default_value_t = 300)]
    pub queue_widen_after_secs: u64,
    /// Broader pools, `skill=skill+skill;...`; a skill not listed widens to every agent.
    #[arg(long, env = "CW_QUEUE_WIDER_POOLS")]
    pub queue_wider_pools: Option<String>,
    /// Seconds a resident whose connection dropped keeps their place in the queue.
    #[arg(long, env = "CW_QUEUE_GRACE_SECS", default_value_t = 60)]
    pub queue_grace_secs: u64,
    /// Longest wrap-up after a call, seconds; the ticket is then done and the agent available.
    #[arg(long, env = "CW_WRAP_UP_MAX_SECS", default_value_t = 300)]
    pub wrap_up_max_secs: u64,
    /// Length of an appointment slot, minutes.
    #[arg(long, env = "CW_APPOINTMENT_SLOT_MIN", default_value_t = 30)]
    pub appointment_slot_min: u16,
    /// Appointments bookable per skill and slot.
    #[arg(long, env = "CW_APPOINTMENT_CAPACITY", default_value_t = 4)]
    pub appointment_capacity: u32,
    /// Dispatcher tick, milliseconds (it also wakes on every queue event).
    #[arg(long, env = "CW_QUEUE_TICK_MS", default_value_t = 250)]
    pub queue_tick_ms: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            offer_timeout_secs: 20,
            queue_widen_after_secs: 300,
            queue_wider_pools: None,
            queue_grace_secs: 60,
            wrap_up_max_secs: 300,
            appointment_slot_min: 30,
            appointment_capacity: 4,
            queue_tick_ms: 250,
        }
    }
}

impl QueueSettings {
    /// The dispatch policy.
    pub fn policy(&self) -> anyhow::Result<crate::domain::queue::Policy> {
        let mut wider_pool = std::collections::HashMap::new();
        if let Some(spec) = &self.queue_wider_pools {
            for part in spec.split(';').filter(|p| !p.trim().is_empty()) {
                let (skill, pool) = part.split_once('=').ok_or_else(|| anyhow::anyhow!("wider pools: expected skill=a+b"))?;
                wider_pool.insert(skill.trim().to_string(), pool.split('+').map(|s| s.trim().to_string()).collect());
            }
        }
        Ok(crate::domain::queue::Policy {
            offer_timeout_ms: self.offer_timeout_secs.max(1) as i64 * 1000,
            widen_after_ms: self.queue_widen_after_secs as i64 * 1000,
            wider_pool,
        })
    }

    /// Service hours from the daily windows and the work calendar (`--holidays`,
    /// `--extra-workdays`, shared with the follow-up deadlines of cases).
    pub fn hours(
        &self,
        workday: crate::config::DailyHours,
        weekend: crate::config::DailyHours,
        calendar: &crate::domain::case::WorkCalendar,
    ) -> anyhow::Result<crate::domain::queue::ServiceHours> {
        use crate::domain::queue::{ServiceHours, Window};
        Ok(ServiceHours {
            workday: Window { open_min: workday.open_min, close_min: workday.close_min },
            weekend: Window { open_min: weekend.open_min, close_min: weekend.close_min },
            holidays: calendar.holidays.clone(),
            extra_workdays: calendar.extra_workdays.clone(),
        })
    }
}
