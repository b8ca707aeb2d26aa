//! The site schema a migration read, kept for the reconciles right after it. A start or a
//! rollout reconciles several times a second (every child's status change triggers one), and
//! each migration would read the site's whole schema again (hundreds of KB on a real site,
//! the heaviest request the operator makes). A read is reused only for the same spec layout,
//! site and credentials, and only for [`SCHEMA_REUSE`]: a spec change reads it at once, and
//! between changes the scanner follows the site's schema (`workers.scanner.schemaInterval`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sgcache::schema::SiteSchema;
use sgcache::site::{SiteClient, SiteError};
use sgcache::spec::SiteConnection;
use sgcache::{storage, ShotgunCacheSpec};

use crate::secrets::digest_of;

/// How long one read of the site's schema serves the migrations that follow it.
pub const SCHEMA_REUSE: Duration = Duration::from_secs(30);

/// A site schema as read, and when the read began (unix ms: recorded with the migration, so
/// a starting scanner knows how old the schema its layout follows is).
#[derive(Clone, Debug)]
pub struct ReadSchema {
    pub schema: Arc<SiteSchema>,
    pub read_ms: i64,
}

/// Site schemas read recently, by spec layout, site and credentials.
#[derive(Debug)]
pub struct SchemaMemo {
    reuse: Duration,
    read: Mutex<HashMap<String, (Instant, ReadSchema)>>,
}

impl Default for SchemaMemo {
    fn default() -> Self {
        SchemaMemo::reusing_for(SCHEMA_REUSE)
    }
}

impl SchemaMemo {
    /// A memo whose reads serve for `reuse` (zero: every migration reads the site).
    pub fn reusing_for(reuse: Duration) -> SchemaMemo {
        SchemaMemo {
            reuse,
            read: Mutex::new(HashMap::new()),
        }
    }

    /// The site's schema: kept from a read under [`SCHEMA_REUSE`] ago for the same key, else
    /// read now (and kept).
    pub async fn schema(
        &self,
        site: &SiteClient,
        conn: &SiteConnection,
        spec: &ShotgunCacheSpec,
    ) -> Result<ReadSchema, SiteError> {
        let key = key(conn, spec);
        if let Some(kept) = self.kept(&key) {
            return Ok(kept);
        }
        let read_ms = chrono::Utc::now().timestamp_millis();
        let schema = ReadSchema {
            schema: Arc::new(site.schema().await?),
            read_ms,
        };
        let mut read = self.read.lock().expect("schema memo lock");
        // Expired reads go as new ones come: the map holds only the last `reuse`'s reads.
        read.retain(|_, (at, _)| at.elapsed() < self.reuse);
        if !self.reuse.is_zero() {
            read.insert(key, (Instant::now(), schema.clone()));
        }
        Ok(schema)
    }

    fn kept(&self, key: &str) -> Option<ReadSchema> {
        let read = self.read.lock().expect("schema memo lock");
        let (at, schema) = read.get(key)?;
        (at.elapsed() < self.reuse).then(|| schema.clone())
    }
}

/// The spec's layout (what a migration plans from), the site and the credentials, hashed:
/// the key never holds the API key itself.
fn key(conn: &SiteConnection, spec: &ShotgunCacheSpec) -> String {
    hex::encode(digest_of(&[
        &storage::spec_hash(spec),
        &conn.url,
        &conn.script_name,
        &conn.api_key,
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(key: &str) -> SiteConnection {
        SiteConnection {
            url: "https://studio.shotgrid.autodesk.com".into(),
            script_name: "sgcache".into(),
            api_key: key.into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_key_follows_the_layout_and_the_credentials_but_never_holds_the_key() {
        let spec = ShotgunCacheSpec::from_yaml(crate::fixtures::TEST_SPEC, "memo").unwrap();
        let mut wider = spec.clone();
        wider.entities[0].fields.push("description".into());
        let k = key(&conn("secret-key"), &spec);
        assert_eq!(k, key(&conn("secret-key"), &spec));
        assert_ne!(k, key(&conn("rotated-key"), &spec));
        assert_ne!(k, key(&conn("secret-key"), &wider));
        assert!(!k.contains("secret-key"));
    }
}
