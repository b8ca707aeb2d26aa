//! Test builders: `ShotgunCache::test()` and friends.

use kube::api::ObjectMeta;
use sgcache::ShotgunCacheSpec;

use crate::crd::FINALIZER;
use crate::{ShotgunCache, ShotgunCacheResourceSpec};

/// A valid spec for Kubernetes: site and database from the Secret `site`, two entity types.
pub const TEST_SPEC: &str = r#"
site:
  url: https://studio.example.com
  scriptName: {value: sgcache}
  apiKey: {secretKeyRef: {name: site, key: apiKey}}
database:
  url: {secretKeyRef: {name: db, key: url}}
entities:
  - type: Shot
    fields: [code, sg_status_list]
  - type: Asset
    fields: [code]
deletionPolicy: Retain
"#;

impl ShotgunCache {
    /// `default/cache` with [`TEST_SPEC`], a uid and generation 1.
    pub fn test() -> Self {
        let spec = ShotgunCacheSpec::from_yaml(TEST_SPEC, "test").expect("valid test spec");
        let mut c = ShotgunCache::new("cache", ShotgunCacheResourceSpec(spec));
        c.metadata = ObjectMeta {
            name: Some("cache".into()),
            namespace: Some("default".into()),
            uid: Some("6e0c2f1a-0000-4000-8000-000000000001".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        c
    }

    /// With the finalizer already added.
    pub fn finalized(mut self) -> Self {
        self.metadata.finalizers = Some(vec![FINALIZER.into()]);
        self
    }

    /// Marked for deletion.
    pub fn deleting(mut self) -> Self {
        let ts = "2026-01-01T00:00:00Z".parse().expect("timestamp");
        self.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(ts));
        self
    }

    /// Edits the spec.
    pub fn with_spec(mut self, edit: impl FnOnce(&mut ShotgunCacheSpec)) -> Self {
        edit(&mut self.spec.0);
        let g = self.metadata.generation.unwrap_or(1);
        self.metadata.generation = Some(g + 1);
        self
    }
}
