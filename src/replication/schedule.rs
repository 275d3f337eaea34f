//! When a scheduled rule runs: an interval (`30s`, `10m`, `6h`, `1d`) counted from the last
//! run, or a cron expression (`0 3 * * *`, five fields, or six with seconds first; times in
//! UTC) parsed by the `croner` crate. Every node's worker looks for due rules; the one whose
//! conditional `UPDATE` moves the rule's next run time runs it, so a schedule fires once
//! across nodes.

use std::str::FromStr;
use std::time::Duration;

use chrono::{TimeZone, Utc};

use crate::error::{RegistryError, Result};

/// The shortest interval accepted.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<croner::Cron>),
}

impl Schedule {
    /// Parses an interval or a cron expression.
    pub fn parse(text: &str) -> Result<Schedule> {
        let text = text.trim();
        if let Some(d) = interval(text) {
            if d < MIN_INTERVAL {
                return Err(RegistryError::Invalid(format!("schedule {text:?}: at least 1s apart")));
            }
            return Ok(Schedule::Every(d));
        }
        let fields = text.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(RegistryError::Invalid(format!(
                "schedule {text:?}: an interval such as 30s, 10m, 6h or 1d, or a cron expression of 5 fields"
            )));
        }
        croner::Cron::from_str(text)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| RegistryError::Invalid(format!("schedule {text:?}: {e}")))
    }

    /// The first run of a new rule: an interval's at once, a cron expression's next match.
    pub fn first(&self, now_ms: i64) -> Result<i64> {
        match self {
            Schedule::Every(_) => Ok(now_ms),
            Schedule::Cron(_) => self.next_after(now_ms),
        }
    }

    /// The run after one due at `now_ms` (ms).
    pub fn next_after(&self, now_ms: i64) -> Result<i64> {
        match self {
            Schedule::Every(d) => Ok(now_ms.saturating_add(d.as_millis() as i64)),
            Schedule::Cron(c) => {
                let now = Utc
                    .timestamp_millis_opt(now_ms)
                    .single()
                    .ok_or_else(|| RegistryError::Internal(format!("time {now_ms} out of range")))?;
                c.find_next_occurrence(&now, false)
                    .map(|t| t.timestamp_millis())
                    .map_err(|e| RegistryError::Invalid(format!("schedule has no next run: {e}")))
            }
        }
    }
}

/// `30s`, `10m`, `6h`, `1d` (a whole number and a unit).
fn interval(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let n: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        let s = Schedule::parse("10m").unwrap();
        assert_eq!(s.first(1_000).unwrap(), 1_000);
        assert_eq!(s.next_after(1_000).unwrap(), 601_000);
        assert!(matches!(Schedule::parse("1d").unwrap(), Schedule::Every(d) if d.as_secs() == 86_400));
        for bad in ["", "0s", "10", "m", "-5m", "1w", "every day", "* * *"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_expressions() {
        // 2026-12-04 13:00:00 UTC; "at minute 30 of every hour" next runs at 13:30.
        let t = 1_796_389_200_000;
        let s = Schedule::parse("30 * * * *").unwrap();
        assert_eq!(s.next_after(t).unwrap(), t + 30 * 60 * 1000);
        assert_eq!(s.first(t).unwrap(), t + 30 * 60 * 1000);
        // Six fields: seconds first.
        let s = Schedule::parse("*/5 * * * * *").unwrap();
        assert_eq!(s.next_after(t).unwrap(), t + 5_000);
        assert!(Schedule::parse("61 * * * *").is_err());
    }
}
