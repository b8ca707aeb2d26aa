//! Prints the `ShotgunCache` CustomResourceDefinition as YAML (`crds/shotguncache.yaml`).

fn main() -> anyhow::Result<()> {
    print!("{}", sgcache_operator::crdgen::crd_yaml()?);
    Ok(())
}
