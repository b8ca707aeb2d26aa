//! Identifier rules. Entity type and field names reach SQL only as quoted identifiers, and only
//! after passing these checks; values are always bound parameters.

/// PostgreSQL truncates identifiers longer than this many bytes.
pub const MAX_IDENT_LEN: usize = 63;

/// Entity types look like `Shot`, `CustomEntity01`, `PublishedFile`.
pub fn validate_entity_type(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_IDENT_LEN
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid entity type {name:?}: expected a letter then letters, digits or _ (at most {MAX_IDENT_LEN})"
        ))
    }
}

/// Field names look like `code`, `sg_status_list`, `step_0`. A leading `_` is reserved for
/// the cache's own columns and `__` for the `{field}__type` / `{field}__id` pair.
pub fn validate_field_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_IDENT_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid field name {name:?}: expected a lowercase letter then lowercase letters, digits or single _ (at most {MAX_IDENT_LEN})"
        ))
    }
}

/// Quotes an identifier that has already been validated (or built from validated parts).
/// Doubling quotes keeps even an unvalidated name inert, as a second line of defence.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The table of an entity type: its lowercase name.
pub fn table_name(entity_type: &str) -> String {
    entity_type.to_ascii_lowercase()
}

/// The association table of a multi-entity field: `{entity_type}_{field_name}`.
pub fn assoc_table_name(entity_type: &str, field: &str) -> String {
    format!("{}_{}", table_name(entity_type), field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert!(validate_entity_type("CustomEntity01").is_ok());
        assert!(validate_entity_type("1Shot").is_err());
        assert!(validate_entity_type("Shot\"; drop table x; --").is_err());
        assert!(validate_field_name("sg_status_list").is_ok());
        assert!(validate_field_name("_retired").is_err());
        assert!(validate_field_name("entity__type").is_err());
        assert!(validate_field_name("Code").is_err());
        assert_eq!(assoc_table_name("Shot", "assets"), "shot_assets");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    proptest! {
        #[test]
        fn accepted_field_names_are_plain_sql_identifiers(name in "\\PC{0,80}") {
            if validate_field_name(&name).is_ok() {
                prop_assert!(name.len() <= MAX_IDENT_LEN);
                prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
                prop_assert!(!name.starts_with('_') && !name.contains("__"));
            }
        }

        #[test]
        fn accepted_entity_types_are_plain_sql_identifiers(name in "\\PC{0,80}") {
            if validate_entity_type(&name).is_ok() {
                prop_assert!(name.len() <= MAX_IDENT_LEN);
                prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            }
        }

        #[test]
        fn generated_valid_names_are_accepted(name in "[a-z][a-z0-9]{0,20}(_[a-z0-9]{1,10}){0,3}") {
            prop_assert!(validate_field_name(&name).is_ok());
        }

        #[test]
        fn quoting_never_leaves_an_unescaped_quote(name in "\\PC{0,40}") {
            let q = quote(&name);
            let inner = &q[1..q.len() - 1];
            prop_assert_eq!(inner.replace("\"\"", "").contains('"'), false);
        }
    }
}
