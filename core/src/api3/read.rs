//! The `read` payload (protocol doc, section 3.2).

use serde_json::{Map, Value};

use super::{Api3Error, Filter};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReturnOnly {
    #[default]
    Active,
    Retired,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortDirection {
    Asc,
    Desc,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sort {
    pub field: String,
    pub direction: SortDirection,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub entities_per_page: u64,
    /// 1-based.
    pub current_page: u64,
}

/// Which `paging_info` the client asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PagingStyle {
    /// Neither flag set (or both false): the client ignores `paging_info`.
    #[default]
    None,
    /// `return_paging_info`: `{"entity_count": N}` (servers < 7.4).
    EntityCount,
    /// `return_paging_info_without_counts`: `{"has_next_page": bool}`.
    HasNextPage,
}

/// A parsed `read` payload.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadRequest {
    pub entity_type: String,
    pub filters: Filter,
    pub return_fields: Vec<String>,
    pub return_only: ReturnOnly,
    pub paging: Option<Paging>,
    pub paging_style: PagingStyle,
    pub sorts: Vec<Sort>,
    pub api_return_image_urls: bool,
    /// `include_archived_projects: false` hides rows of archived projects.
    pub include_archived_projects: bool,
    /// Keys this parser does not know. A proxy must pass such a read through.
    pub unknown_keys: Vec<String>,
    /// `additional_filter_presets`, kept verbatim (server-side logic).
    pub additional_filter_presets: Option<Value>,
}

const KNOWN_KEYS: &[&str] = &[
    "type",
    "filters",
    "return_fields",
    "return_only",
    "paging",
    "return_paging_info",
    "return_paging_info_without_counts",
    "sorts",
    "api_return_image_urls",
    "include_archived_projects",
    "additional_filter_presets",
];

impl ReadRequest {
    pub fn parse(payload: &Value) -> Result<ReadRequest, Api3Error> {
        let obj = payload
            .as_object()
            .ok_or_else(|| Api3Error::bad_request("read needs a payload object"))?;
        let entity_type = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Api3Error::bad_request("read needs an entity type"))?
            .to_string();
        let filters = Filter::parse(obj.get("filters").unwrap_or(&Value::Null))?;
        let return_fields = match obj.get("return_fields") {
            None | Some(Value::Null) => vec!["id".to_string()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Api3Error::bad_request("return_fields must be strings"))?,
            Some(_) => return Err(Api3Error::bad_request("return_fields must be an array")),
        };
        let return_only = match obj.get("return_only").and_then(Value::as_str) {
            None | Some("active") => ReturnOnly::Active,
            Some("retired") => ReturnOnly::Retired,
            Some(other) => {
                return Err(Api3Error::bad_request(format!(
                    "invalid return_only {other:?}"
                )))
            }
        };
        let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        let paging_style = if flag("return_paging_info_without_counts") {
            PagingStyle::HasNextPage
        } else if flag("return_paging_info") {
            PagingStyle::EntityCount
        } else {
            PagingStyle::None
        };
        Ok(ReadRequest {
            entity_type,
            filters,
            return_fields,
            return_only,
            paging: parse_paging(obj.get("paging"))?,
            paging_style,
            sorts: parse_sorts(obj.get("sorts"))?,
            api_return_image_urls: flag("api_return_image_urls"),
            include_archived_projects: obj
                .get("include_archived_projects")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            unknown_keys: unknown_keys(obj),
            additional_filter_presets: obj.get("additional_filter_presets").cloned(),
        })
    }
}

fn unknown_keys(obj: &Map<String, Value>) -> Vec<String> {
    obj.keys()
        .filter(|k| !KNOWN_KEYS.contains(&k.as_str()))
        .cloned()
        .collect()
}

fn parse_paging(value: Option<&Value>) -> Result<Option<Paging>, Api3Error> {
    let Some(v) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let num = |k: &str| v.get(k).and_then(Value::as_u64);
    match (num("entities_per_page"), num("current_page")) {
        (Some(per), Some(page)) if per > 0 && page > 0 => Ok(Some(Paging {
            entities_per_page: per,
            current_page: page,
        })),
        (Some(per), None) if per > 0 => Ok(Some(Paging {
            entities_per_page: per,
            current_page: 1,
        })),
        _ => Err(Api3Error::bad_request(
            "paging needs positive entities_per_page and current_page",
        )),
    }
}

fn parse_sorts(value: Option<&Value>) -> Result<Vec<Sort>, Api3Error> {
    let Some(v) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let items = v
        .as_array()
        .ok_or_else(|| Api3Error::bad_request("sorts must be an array"))?;
    items
        .iter()
        .map(|s| {
            // The client also accepts the legacy key `column`.
            let field = s
                .get("field_name")
                .or_else(|| s.get("column"))
                .and_then(Value::as_str)
                .ok_or_else(|| Api3Error::bad_request("each sort needs a field_name"))?;
            let direction = match s.get("direction").and_then(Value::as_str) {
                None | Some("asc") => SortDirection::Asc,
                Some("desc") => SortDirection::Desc,
                Some(other) => {
                    return Err(Api3Error::bad_request(format!(
                        "invalid sort direction {other:?}"
                    )))
                }
            };
            Ok(Sort {
                field: field.to_string(),
                direction,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_client_read() {
        let r = ReadRequest::parse(&json!({
            "type": "Shot",
            "filters": {"logical_operator": "and", "conditions": []},
            "return_fields": ["code", "sg_sequence.Sequence.code"],
            "return_only": "active",
            "paging": {"entities_per_page": 500, "current_page": 2},
            "return_paging_info_without_counts": true,
            "api_return_image_urls": true,
            "sorts": [{"field_name": "code", "direction": "desc"}],
            "new_thing": 1,
        }))
        .unwrap();
        assert_eq!(r.entity_type, "Shot");
        assert_eq!(
            r.paging,
            Some(Paging {
                entities_per_page: 500,
                current_page: 2
            })
        );
        assert_eq!(r.paging_style, PagingStyle::HasNextPage);
        assert_eq!(r.sorts[0].direction, SortDirection::Desc);
        assert_eq!(r.unknown_keys, vec!["new_thing"]);
        assert!(r.include_archived_projects);
        assert!(ReadRequest::parse(&json!({"type": "Shot", "return_only": "both"})).is_err());
        assert_eq!(
            ReadRequest::parse(&json!({"type": "Shot"}))
                .unwrap()
                .return_fields,
            vec!["id"]
        );
    }
}
