//! Configuration of the test site: schema, seed, credentials, `info` and faults. Readable
//! from YAML or JSON (`--config FILE`); every key is optional.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sgcache::schema::SiteSchema;

use crate::faults::Faults;
use crate::seed::SeedConfig;
use crate::semantics::Semantics;

/// A script (API key) principal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptCredential {
    pub script_name: String,
    pub script_key: String,
    /// The script's "Generate Events" setting.
    #[serde(default = "yes")]
    pub events: bool,
}

/// A human user principal; the site also creates a `HumanUser` with this login.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserCredential {
    pub login: String,
    pub password: String,
    #[serde(default)]
    pub name: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// A `schema.json` file or a directory with `schema.json` (+ `schema_entity.json`).
    /// `None`: the real site's schema embedded in this binary ([`default_schema`]).
    pub schema_path: Option<PathBuf>,
    /// A schema given in-process (tests); wins over `schema_path`.
    #[serde(skip)]
    pub schema: Option<SiteSchema>,
    pub seed: SeedConfig,
    pub scripts: Vec<ScriptCredential>,
    pub users: Vec<UserCredential>,
    pub faults: Faults,
    /// `info.version`. Below 7.4 the client pages with `entity_count`.
    pub version: Vec<u32>,
    pub max_entities_per_page: u64,
    /// A fixed site clock `YYYY-MM-DDTHH:MM:SSZ` (relative-date tests); `None`: real time.
    /// Either way `PUT /control/clock` can set or advance it later.
    pub clock: Option<String>,
    /// How many recent requests `/control/requests` keeps.
    pub request_log_size: usize,
    /// Unset checkbox fields read as `null` (and match neither `is true` nor `is false`), as
    /// on real sites whose checkbox columns have no default. Also `PUT /control/quirks`.
    pub null_checkboxes: bool,
    /// Text case, sort collation and week start; the defaults are the documented choices
    /// (sim/README.md, "Semantic choices"). Also `PUT /control/quirks`.
    pub semantics: Semantics,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            schema_path: None,
            schema: None,
            seed: SeedConfig::default(),
            scripts: vec![
                ScriptCredential {
                    script_name: "sgcache_test".into(),
                    script_key: "test_key".into(),
                    events: true,
                },
                ScriptCredential {
                    script_name: "silent_script".into(),
                    script_key: "silent_key".into(),
                    events: false,
                },
            ],
            users: vec![UserCredential {
                login: "artist".into(),
                password: "artist_password".into(),
                name: Some("Artist User".into()),
            }],
            faults: Faults::default(),
            version: vec![8, 30, 0],
            max_entities_per_page: 500,
            clock: None,
            request_log_size: 10_000,
            null_checkboxes: false,
            semantics: Semantics::default(),
        }
    }
}

impl SimConfig {
    /// Reads a YAML or JSON config file (JSON is YAML).
    pub fn from_file(path: &Path) -> anyhow::Result<SimConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let config: SimConfig = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text)?
        } else {
            serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        };
        Ok(config)
    }

    /// Loads the schema this config names.
    pub fn load_schema(&self) -> anyhow::Result<SiteSchema> {
        if let Some(s) = &self.schema {
            return Ok(s.clone());
        }
        let Some(path) = self.schema_path.clone() else {
            return Ok(default_schema()?);
        };
        if path.is_dir() {
            return Ok(SiteSchema::load_dir(&path)?);
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)?;
        Ok(SiteSchema::from_api(&value, None)?)
    }
}

/// The test site's default schema: a real site's (`sim/fixtures/shotgun-schema`, see its
/// README), compiled into the binary so that the test site runs from anywhere.
pub fn default_schema() -> Result<SiteSchema, sgcache::schema::SchemaError> {
    const SCHEMA: &str = include_str!("../fixtures/shotgun-schema/schema.json");
    const ENTITIES: &str = include_str!("../fixtures/shotgun-schema/schema_entity.json");
    let parse = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .map_err(|e| sgcache::schema::SchemaError(format!("embedded schema: {e}")))
    };
    SiteSchema::from_api(&parse(SCHEMA)?, Some(&parse(ENTITIES)?))
}
