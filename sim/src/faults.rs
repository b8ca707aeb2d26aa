//! Fault injection (set at start, changed through `PUT /control/faults`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fixed delay before every API3 answer.
    pub latency_ms: u64,
    /// Extra uniformly random delay in `[0, jitter_ms]`.
    pub jitter_ms: u64,
    /// Delay of `read` answers after they are computed: the answer holds the data as it was
    /// when the read arrived and reaches the client this much later (a long page on a slow
    /// link), while writes sent meanwhile are answered at once.
    pub read_reply_delay_ms: u64,
    /// Fraction of requests answered with HTTP 503.
    pub fail_503_rate: f64,
    /// Fraction of requests that hang for `timeout_ms` and then get HTTP 504.
    pub timeout_rate: f64,
    pub timeout_ms: u64,
    /// The whole site answers 503, `info` included.
    pub down: bool,
    /// Fraction of new events that become visible only `event_gap_delay_ms` later.
    pub event_gap_rate: f64,
    pub event_gap_delay_ms: u64,
    /// Fraction of new events whose ids never become visible.
    pub event_drop_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: 0,
            jitter_ms: 0,
            read_reply_delay_ms: 0,
            fail_503_rate: 0.0,
            timeout_rate: 0.0,
            timeout_ms: 30_000,
            down: false,
            event_gap_rate: 0.0,
            event_gap_delay_ms: 2_000,
            event_drop_rate: 0.0,
        }
    }
}

impl Faults {
    /// Applies a partial update (`{"down": true}`); unknown keys and bad values are errors.
    pub fn merged(&self, patch: &Value) -> Result<Faults, String> {
        let Value::Object(patch) = patch else {
            return Err("faults must be a JSON object".into());
        };
        let mut current = serde_json::to_value(self).map_err(|e| e.to_string())?;
        if let Value::Object(m) = &mut current {
            for (k, v) in patch {
                m.insert(k.clone(), v.clone());
            }
        }
        let f: Faults = serde_json::from_value(current).map_err(|e| e.to_string())?;
        for (name, rate) in [
            ("fail_503_rate", f.fail_503_rate),
            ("timeout_rate", f.timeout_rate),
            ("event_gap_rate", f.event_gap_rate),
            ("event_drop_rate", f.event_drop_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partial_updates_merge_and_validate() {
        let f = Faults::default().merged(&json!({"down": true})).unwrap();
        assert!(f.down);
        assert_eq!(f.timeout_ms, 30_000);
        assert!(f.merged(&json!({"nope": 1})).is_err());
        assert!(f.merged(&json!({"fail_503_rate": 2.0})).is_err());
        assert!(f.merged(&json!([])).is_err());
    }
}
