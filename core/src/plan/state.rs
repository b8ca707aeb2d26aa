//! What the database holds, as the state tables describe it: the planner's view of "current".

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::{DataType, Storage};

/// Where a cached field is in its life: only `Ready` fields are served from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldState {
    /// Column exists, values not loaded yet.
    Pending,
    /// The scanner is loading values.
    Backfilling,
    /// Values complete and kept current: served from the cache.
    Ready,
    /// Out of the spec: no longer served or written; the column stays until pruned.
    Dropped,
    /// The site returned a value the column cannot hold (docs/storage.md "Unservable
    /// fields"): still written (that value as null), never served; `migrate` backfills it
    /// again.
    Unservable,
}

impl FieldState {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldState::Pending => "pending",
            FieldState::Backfilling => "backfilling",
            FieldState::Ready => "ready",
            FieldState::Dropped => "dropped",
            FieldState::Unservable => "unservable",
        }
    }

    /// Still to fill: pending or backfilling (the scanner's work, and what keeps a type's
    /// reads from the cache).
    pub fn to_fill(self) -> bool {
        matches!(self, FieldState::Pending | FieldState::Backfilling)
    }

    pub fn parse(s: &str) -> Option<FieldState> {
        Some(match s {
            "pending" => FieldState::Pending,
            "backfilling" => FieldState::Backfilling,
            "ready" => FieldState::Ready,
            "dropped" => FieldState::Dropped,
            "unservable" => FieldState::Unservable,
            _ => return None,
        })
    }
}

impl fmt::Display for FieldState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cached entity type (a row of `_sgcache_types`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypeState {
    pub table_name: String,
    pub display_field: Option<String>,
}

/// A field with storage in the database (a row of `_sgcache_fields`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldRecord {
    /// The site data type the column(s) were built for.
    pub data_type: String,
    pub state: FieldState,
    /// The site's schema record of the field.
    pub schema: Value,
}

impl FieldRecord {
    /// How the field's values are stored (from the data type the columns were built for).
    pub fn storage(&self) -> Storage {
        DataType::from_api(&self.data_type).storage()
    }
}

/// The cache's layout: every cached type and every field that has storage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DbState {
    pub types: BTreeMap<String, TypeState>,
    /// entity type → field name → record.
    pub fields: BTreeMap<String, BTreeMap<String, FieldRecord>>,
}

impl DbState {
    pub fn field(&self, entity_type: &str, field: &str) -> Option<&FieldRecord> {
        self.fields.get(entity_type)?.get(field)
    }

    /// Fields of a type the cache writes: every field with storage that is not dropped.
    pub fn live_fields<'a>(
        &'a self,
        entity_type: &str,
    ) -> impl Iterator<Item = (&'a String, &'a FieldRecord)> + 'a {
        self.fields
            .get(entity_type)
            .into_iter()
            .flatten()
            .filter(|(_, r)| r.state != FieldState::Dropped)
    }
}
