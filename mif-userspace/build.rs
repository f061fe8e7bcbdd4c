//! Builds the kernel programs (mif-ebpf) with aya-build so the `mif` binary
//! embeds them and needs nothing beside it at run time.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata_root()?;
    let ebpf_dir = format!("{metadata}/mif-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "mif-ebpf",
            root_dir: &ebpf_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context(
        "building the eBPF programs (run `cargo xtask setup` if bpf-linker or rust-src is missing)",
    )
}

/// The workspace root: the parent of this crate's manifest directory.
fn cargo_metadata_root() -> anyhow::Result<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let parent = std::path::Path::new(&dir)
        .parent()
        .ok_or_else(|| anyhow!("{dir} has no parent"))?;
    Ok(parent.display().to_string())
}
