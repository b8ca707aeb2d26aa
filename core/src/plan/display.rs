//! The plan as people read it: one line per change, in a stable order.

use std::fmt;

use super::{Change, Plan};

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateTable {
                entity_type,
                table,
                display_field,
            } => {
                write!(f, "+ create table {table} for {entity_type}")?;
                match display_field {
                    Some(d) => write!(f, " (display field {d})"),
                    None => write!(f, " (no display field)"),
                }
            }
            Change::SetDisplayField {
                entity_type,
                display_field,
            } => write!(
                f,
                "~ set display field of {entity_type} to {}",
                display_field.as_deref().unwrap_or("none")
            ),
            Change::AddField(d) => write!(
                f,
                "+ add field {}.{} ({}), pending backfill",
                d.entity_type, d.field_name, d.data_type
            ),
            Change::RebuildField {
                field: d,
                old_data_type,
            } => write!(
                f,
                "~ rebuild field {}.{} ({old_data_type} -> {}), pending backfill",
                d.entity_type, d.field_name, d.data_type
            ),
            Change::ReviveField(d) => write!(
                f,
                "+ revive field {}.{} ({}), pending backfill",
                d.entity_type, d.field_name, d.data_type
            ),
            Change::UpdateFieldSchema(d) => write!(
                f,
                "~ update schema record of {}.{}",
                d.entity_type, d.field_name
            ),
            Change::DropField {
                entity_type,
                field_name,
            } => write!(
                f,
                "- drop field {entity_type}.{field_name} (no longer served; storage kept)"
            ),
            Change::PruneField {
                entity_type,
                field_name,
                data_type,
            } => write!(
                f,
                "- prune field {entity_type}.{field_name} ({data_type}): storage dropped"
            ),
            Change::PruneTable {
                entity_type, table, ..
            } => write!(f, "- prune table {table} of {entity_type}"),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            writeln!(f, "no changes")?;
        }
        for c in &self.changes {
            writeln!(f, "{c}")?;
        }
        for p in &self.passed_through {
            let how = if p.declared { "declared, " } else { "" };
            writeln!(
                f,
                "= pass through {}.{} ({how}{}): {}",
                p.entity_type, p.field_name, p.data_type, p.reason
            )?;
        }
        for t in &self.implied {
            writeln!(f, "= implied by links: {t}")?;
        }
        for u in &self.uncovered {
            writeln!(
                f,
                "! reads returning {u} go to the site (the cache cannot name the link)"
            )?;
        }
        for g in &self.gone {
            writeln!(
                f,
                "! {g}: in the spec, deleted on the site since it was cached (dropped; reads of \
                 it go to the site; remove it from the spec, or revive it on the site)"
            )?;
        }
        Ok(())
    }
}
