//! What the cgroup watchers (mif-ebpf's `cgroup_naming`) must be told about
//! the running kernel: where a `struct cgroup` keeps its id, name,
//! hierarchy and ancestors, read from the kernel's BTF (the programs are
//! built without the kernel's headers, and these offsets differ between
//! kernel builds), and which cgroup is the attach cgroup.

use btfparse::Readable;
use mif_common::CgroupNaming;

use crate::{
    apply::kernel_btf::{BtfError, KernelBtf, KERNEL_BTF},
    host::cgroup::Cgroup,
};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read the kernel's BTF at {KERNEL_BTF}")]
    Read(#[source] std::io::Error),
    #[error("cannot parse the kernel's BTF at {KERNEL_BTF}: {0}")]
    Parse(String),
    #[error("the kernel's BTF has no {0} (Linux 6.1 or later is needed)")]
    Missing(&'static str),
}

/// The running kernel's field offsets, as the watchers' settings
/// ([`CgroupNaming`]) without an attach cgroup yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLayout(CgroupNaming);

/// BTF bytes for btfparse, which reads through [`Readable`]: how the tests
/// read the kernel object's own BTF, and check [`KernelBtf`] against a
/// full parser.
pub struct BtfBytes<T>(pub T);

impl<T: AsRef<[u8]>> Readable for BtfBytes<T> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let eof = || btfparse::Error::new(btfparse::ErrorKind::EOF, "past the end of the BTF");
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buffer.len()).ok_or_else(eof)?;
        buffer.copy_from_slice(self.0.as_ref().get(start..end).ok_or_else(eof)?);
        Ok(())
    }
}

impl KernelLayout {
    /// Reads the running kernel's layout (a few milliseconds, see
    /// [`KernelBtf`]; with btfparse's full parse it was 0.1–0.3 s of CPU,
    /// on a thread of its own but beside the verifier on a 2-CPU host).
    pub fn of_running_kernel() -> Result<Self, LayoutError> {
        let btf = KernelBtf::of_running_kernel().map_err(|e| match e {
            BtfError::Read(source) => LayoutError::Read(source),
            BtfError::Malformed(why) => LayoutError::Parse(why.to_string()),
        })?;
        // The first of `fields` that `ty` has (fields get renamed).
        let offset = |ty: &str, fields: &[&str], what: &'static str| {
            fields
                .iter()
                .find_map(|field| btf.offset_of(ty, field))
                .ok_or(LayoutError::Missing(what))
        };
        Ok(Self(CgroupNaming {
            ready: 1,
            cgroup_kn: offset("cgroup", &["kn"], "struct cgroup's kn")?,
            cgroup_root: offset("cgroup", &["root"], "struct cgroup's root")?,
            cgroup_level: offset("cgroup", &["level"], "struct cgroup's level")?,
            cgroup_ancestors: offset("cgroup", &["ancestors"], "struct cgroup's ancestors")?,
            root_hierarchy_id: offset(
                "cgroup_root",
                &["hierarchy_id"],
                "struct cgroup_root's hierarchy_id",
            )?,
            kn_id: offset("kernfs_node", &["id"], "struct kernfs_node's id")?,
            kn_name: offset("kernfs_node", &["name"], "struct kernfs_node's name")?,
            // Renamed in 6.15, when it became RCU-protected.
            kn_parent: offset(
                "kernfs_node",
                &["__parent", "parent"],
                "struct kernfs_node's parent",
            )?,
            attach_level: 0,
            attach_id: 0,
        }))
    }

    /// The watchers' settings for the attach cgroup `attach`.
    pub fn naming(&self, attach: &Cgroup) -> CgroupNaming {
        CgroupNaming {
            attach_level: attach.level,
            attach_id: attach.id,
            ..self.0
        }
    }
}
