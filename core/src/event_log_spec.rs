//! `eventLog` in the spec: whether the event follower keeps the site's event log in the cache
//! (so event daemons polling `EventLogEntry` through the proxy cost the site nothing), and for
//! how long (docs/proxy.md, "The event log").

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The event log kept by the cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventLogSpec {
    /// Keep every event the follower reads (all entity types) and answer daemons' reads of
    /// `EventLogEntry` from it. `false` drops the kept log and passes those reads through.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// How much to keep: an age (`30d`, `12h`, `90m`) or a number of events (`1000000`).
    /// Older events are trimmed in the background; reads reaching below what is kept go to
    /// the site.
    #[serde(default)]
    pub retain: Retain,
}

impl Default for EventLogSpec {
    fn default() -> Self {
        EventLogSpec {
            enabled: true,
            retain: Retain::default(),
        }
    }
}

fn default_enabled() -> bool {
    true
}

/// Retention of the kept event log: an age or a row count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retain {
    Age(Duration),
    Rows(u64),
}

impl Default for Retain {
    /// A month: more than any daemon's restart needs, about 1 GB for a busy site's 5 M events.
    fn default() -> Self {
        Retain::Age(Duration::from_secs(30 * 86_400))
    }
}

impl Retain {
    fn parse_age(s: &str) -> Result<Duration, String> {
        let digits = s.chars().take_while(char::is_ascii_digit).count();
        let (num, unit) = s.split_at(digits);
        let bad = || {
            format!("invalid eventLog.retain {s:?}: expected an age (30d, 12h, 90m, 600s) or a number of events")
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        let secs = match unit {
            "d" => n.checked_mul(86_400),
            "h" => n.checked_mul(3_600),
            "m" => n.checked_mul(60),
            "s" => Some(n),
            _ => None,
        }
        .ok_or_else(bad)?;
        if secs == 0 {
            return Err(bad());
        }
        Ok(Duration::from_secs(secs))
    }
}

impl Serialize for Retain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Retain::Rows(n) => s.serialize_u64(*n),
            Retain::Age(d) => {
                let secs = d.as_secs();
                let text = if secs % 86_400 == 0 {
                    format!("{}d", secs / 86_400)
                } else if secs % 3_600 == 0 {
                    format!("{}h", secs / 3_600)
                } else if secs % 60 == 0 {
                    format!("{}m", secs / 60)
                } else {
                    format!("{secs}s")
                };
                s.serialize_str(&text)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Retain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Rows(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "eventLog.retain: expected an age (30d, 12h, 90m, 600s) or a number of events",
            )
        })? {
            Raw::Rows(0) => Err(serde::de::Error::custom(
                "eventLog.retain: keep at least one event (or set enabled: false)",
            )),
            Raw::Rows(n) => Ok(Retain::Rows(n)),
            Raw::Text(t) => match t.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Retain::Rows(n)),
                _ => Retain::parse_age(&t)
                    .map(Retain::Age)
                    .map_err(serde::de::Error::custom),
            },
        }
    }
}

impl JsonSchema for Retain {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EventLogRetain".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Kubernetes' int-or-string (an integer or a string); the value is checked when the
        // spec is read.
        schemars::json_schema!({"x-kubernetes-int-or-string": true})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retain_is_an_age_or_a_row_count() {
        let parse = |s: &str| serde_json::from_str::<Retain>(s);
        assert_eq!(
            parse("\"30d\"").unwrap(),
            Retain::Age(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            parse("\"12h\"").unwrap(),
            Retain::Age(Duration::from_secs(12 * 3_600))
        );
        assert_eq!(parse("1000000").unwrap(), Retain::Rows(1_000_000));
        assert_eq!(parse("\"500\"").unwrap(), Retain::Rows(500));
        for bad in ["0", "\"0d\"", "\"30 days\"", "\"-1\"", "true", "\"d\""] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
        let spec = crate::ShotgunCacheSpec::from_yaml(
            "eventLog: {enabled: false, retain: 1000000}\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            spec.event_log,
            EventLogSpec {
                enabled: false,
                retain: Retain::Rows(1_000_000)
            }
        );
        assert_eq!(
            crate::ShotgunCacheSpec::from_yaml("{}", "t")
                .unwrap()
                .event_log,
            EventLogSpec::default()
        );
        let err =
            crate::ShotgunCacheSpec::from_yaml("eventLog: {retain: 30 days}\n", "t").unwrap_err();
        assert!(err.to_string().contains("eventLog.retain"), "{err}");
        assert!(crate::ShotgunCacheSpec::from_yaml("eventLog: {keep: 3}\n", "t").is_err());
        for r in [
            Retain::Rows(7),
            Retain::default(),
            Retain::Age(Duration::from_secs(90)),
        ] {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(parse(&text).unwrap(), r, "{text}");
        }
    }
}
