//! The wire form of the filter language (protocol doc, section 5.1).

use serde_json::{json, Value};

use super::Api3Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogicalOperator {
    And,
    Or,
}

/// `{"path": ..., "relation": ..., "values": [...]}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub path: String,
    pub relation: String,
    pub values: Vec<Value>,
}

/// A filter tree: a condition or a group of filters.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Condition(Condition),
    Group {
        op: LogicalOperator,
        conditions: Vec<Filter>,
    },
}

impl Filter {
    /// The empty filter: matches every row.
    pub fn all() -> Filter {
        Filter::Group {
            op: LogicalOperator::And,
            conditions: Vec::new(),
        }
    }

    /// Parses the wire form. A missing or null filter is the empty filter.
    pub fn parse(value: &Value) -> Result<Filter, Api3Error> {
        match value {
            Value::Null => Ok(Filter::all()),
            Value::Object(obj) if obj.contains_key("path") => {
                let path = obj
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("a condition's path must be a string"))?;
                let relation = obj
                    .get("relation")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("condition on {path} has no relation")))?;
                let values = match obj.get("values") {
                    Some(Value::Array(a)) => a.clone(),
                    None | Some(Value::Null) => Vec::new(),
                    Some(v) => vec![v.clone()],
                };
                if let Some(k) = obj
                    .keys()
                    .find(|k| !["path", "relation", "values"].contains(&k.as_str()))
                {
                    return Err(invalid(format!("unknown key {k:?} in condition on {path}")));
                }
                Ok(Filter::Condition(Condition {
                    path: path.to_string(),
                    relation: relation.to_string(),
                    values,
                }))
            }
            Value::Object(obj) => {
                let op = match obj.get("logical_operator").and_then(Value::as_str) {
                    Some("and") | None => LogicalOperator::And,
                    Some("or") => LogicalOperator::Or,
                    Some(other) => {
                        return Err(invalid(format!("unknown logical_operator {other:?}")))
                    }
                };
                let conditions = match obj.get("conditions") {
                    Some(Value::Array(a)) => {
                        a.iter().map(Filter::parse).collect::<Result<_, _>>()?
                    }
                    None => Vec::new(),
                    Some(_) => return Err(invalid("conditions must be an array")),
                };
                if let Some(k) = obj
                    .keys()
                    .find(|k| !["logical_operator", "conditions"].contains(&k.as_str()))
                {
                    return Err(invalid(format!("unknown key {k:?} in filter group")));
                }
                Ok(Filter::Group { op, conditions })
            }
            // Bare user syntax sent by hand: `[["code", "is", "x"], ...]` is not the wire form.
            _ => Err(invalid(
                "filters must be an object with logical_operator and conditions",
            )),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Filter::Condition(c) => {
                json!({"path": c.path, "relation": c.relation, "values": c.values})
            }
            Filter::Group { op, conditions } => json!({
                "logical_operator": match op { LogicalOperator::And => "and", LogicalOperator::Or => "or" },
                "conditions": conditions.iter().map(Filter::to_value).collect::<Vec<_>>(),
            }),
        }
    }

    /// Every condition in the tree, depth first.
    pub fn conditions(&self) -> Vec<&Condition> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Condition>) {
        match self {
            Filter::Condition(c) => out.push(c),
            Filter::Group { conditions, .. } => conditions.iter().for_each(|f| f.collect(out)),
        }
    }
}

fn invalid(message: impl Into<String>) -> Api3Error {
    Api3Error::bad_request(format!("Invalid filters: {}", message.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_groups_and_round_trips() {
        let wire = json!({"logical_operator": "and", "conditions": [
            {"path": "sg_status_list", "relation": "is", "values": ["ip"]},
            {"logical_operator": "or", "conditions": [
                {"path": "assets", "relation": "is", "values": [{"type": "Asset", "id": 9}]},
                {"path": "id", "relation": "in", "values": [1, 2]}]}]});
        let f = Filter::parse(&wire).unwrap();
        assert_eq!(f.conditions().len(), 3);
        assert_eq!(f.to_value(), wire);
        assert_eq!(Filter::parse(&Value::Null).unwrap(), Filter::all());
        assert!(Filter::parse(&json!([["code", "is", "x"]])).is_err());
        assert!(Filter::parse(&json!({"logical_operator": "xor", "conditions": []})).is_err());
        assert!(Filter::parse(
            &json!({"path": "code", "relation": "is", "values": [], "extra": 1})
        )
        .is_err());
    }
}
