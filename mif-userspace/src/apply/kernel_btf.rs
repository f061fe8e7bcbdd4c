//! Where the running kernel keeps a few fields of its structures, read
//! from its BTF (`/sys/kernel/btf/vmlinux`): the programs are built without
//! the kernel's headers, and the offsets differ between kernel builds.
//!
//! Only struct members are looked up, so this reads the BTF's type section
//! once to index it and compares names of structs alone: 3–9 ms for this
//! machine's 6 MiB, where a parser that builds every type (btfparse) took
//! 0.1–0.3 s, too much before the programs can be loaded. Used for the
//! socket hooks' [`TaskLayout`] and the cgroup watchers' layout
//! (`cgroup_layout`). The format
//! is the kernel's UAPI (`include/uapi/linux/btf.h`), stable since 5.2.
use std::fs;

use mif_common::TaskLayout;

/// Where the kernel describes its own types.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read the kernel's BTF at {KERNEL_BTF}")]
    Read(#[source] std::io::Error),
    #[error("the kernel's BTF at {KERNEL_BTF} is malformed: {0}")]
    Malformed(&'static str),
}

/// A BTF blob with an index of its types.
pub struct KernelBtf {
    bytes: Vec<u8>,
    /// Start of the string section in `bytes`.
    strings: usize,
    /// Where each type's record starts in `bytes`, by type id (id 0, void,
    /// has none: index 0 holds a placeholder).
    types: Vec<usize>,
}

/// One type record: its kind, member count, name and the word after the
/// info (size or referenced type), and where its members start.
struct Record {
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    name: u32,
    size_or_type: u32,
    body: usize,
}

impl KernelBtf {
    pub fn of_running_kernel() -> Result<Self, BtfError> {
        Self::parse(fs::read(KERNEL_BTF).map_err(BtfError::Read)?)
    }

    /// Indexes a BTF blob in the machine's byte order.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, BtfError> {
        let u32_at = |at: usize| -> Result<u32, BtfError> {
            let word = bytes
                .get(at..at + 4)
                .ok_or(BtfError::Malformed("truncated"))?;
            Ok(u32::from_ne_bytes(word.try_into().expect("four bytes")))
        };
        let magic = bytes
            .get(0..2)
            .map(|m| u16::from_ne_bytes([m[0], m[1]]))
            .ok_or(BtfError::Malformed("truncated header"))?;
        if magic != MAGIC {
            return Err(BtfError::Malformed("not BTF in this machine's byte order"));
        }
        let header_len = u32_at(4)? as usize;
        if header_len < HEADER_LEN {
            return Err(BtfError::Malformed("short header"));
        }
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let types_start = header_len + type_off;
        let types_end = types_start + type_len;
        let strings = header_len + str_off;
        if types_end > bytes.len() || strings + str_len > bytes.len() {
            return Err(BtfError::Malformed("sections past the end"));
        }
        let mut types = vec![0];
        let mut at = types_start;
        while at < types_end {
            types.push(at);
            let info = u32_at(at + 4)?;
            let vlen = (info & 0xffff) as usize;
            at += 12 + trailer_len((info >> 24) & 0x1f, vlen)?;
        }
        Ok(Self {
            bytes,
            strings,
            types,
        })
    }

    fn u32_at(&self, at: usize) -> u32 {
        // In bounds: `parse` walked every record within the type section.
        u32::from_ne_bytes(self.bytes[at..at + 4].try_into().expect("four bytes"))
    }

    fn record(&self, id: u32) -> Option<Record> {
        let at = *self.types.get(id as usize).filter(|_| id != 0)?;
        let info = self.u32_at(at + 4);
        Some(Record {
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 != 0,
            name: self.u32_at(at),
            size_or_type: self.u32_at(at + 8),
            body: at + 12,
        })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let start = self.strings + offset as usize;
        let rest = self.bytes.get(start..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// The struct or union a type is once typedefs and qualifiers are
    /// looked through.
    fn composite(&self, mut id: u32) -> Option<Record> {
        for _ in 0..16 {
            let record = self.record(id)?;
            match record.kind {
                KIND_STRUCT | KIND_UNION => return Some(record),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = record.size_or_type
                }
                _ => return None,
            }
        }
        None
    }

    /// The byte offset of `field` in `struct name`, looking into anonymous
    /// structs and unions as C does (`kernfs_node`'s `id` sits in one on
    /// some kernels). `None` when the struct or the field is missing, or
    /// the field is a bitfield.
    pub fn offset_of(&self, name: &str, field: &str) -> Option<u32> {
        let id = (1..self.types.len() as u32).find(|&id| {
            self.record(id)
                .is_some_and(|r| r.kind == KIND_STRUCT && self.name(r.name) == name.as_bytes())
        })?;
        self.member_offset(&self.record(id)?, field.as_bytes(), 0)
    }

    fn member_offset(&self, record: &Record, field: &[u8], depth: u32) -> Option<u32> {
        if depth > 4 {
            return None;
        }
        for member in 0..record.vlen {
            let at = record.body + member * 12;
            let (name, ty, offset) = (self.u32_at(at), self.u32_at(at + 4), self.u32_at(at + 8));
            // With the kind flag, the top byte is a bitfield's size.
            let bits = if record.kind_flag {
                if offset >> 24 != 0 && name != 0 && self.name(name) == field {
                    return None;
                }
                offset & 0x00ff_ffff
            } else {
                offset
            };
            if name == 0 {
                if let Some(inner) = self.composite(ty) {
                    if let Some(found) = self.member_offset(&inner, field, depth + 1) {
                        return Some(bits / 8 + found);
                    }
                }
            } else if self.name(name) == field {
                return (bits % 8 == 0).then_some(bits / 8);
            }
        }
        None
    }
}

/// What the socket hooks read of the current task, on the running kernel;
/// all zero (the helpers) when its BTF is missing or lacks a field, which
/// is logged.
pub fn task_layout() -> TaskLayout {
    let btf = match KernelBtf::of_running_kernel() {
        Ok(btf) => btf,
        Err(e) => {
            log::info!(
                "{e}: the socket hooks ask the kernel for cgroup and namespace by helper calls"
            );
            return TaskLayout::default();
        }
    };
    match task_layout_in(&btf) {
        Ok(layout) => layout,
        Err(missing) => {
            log::info!(
                "the kernel's BTF has no {missing}: the socket hooks ask the kernel for cgroup \
                 and namespace by helper calls"
            );
            TaskLayout::default()
        }
    }
}

/// [`task_layout`] from `btf`, or the first field it lacks.
fn task_layout_in(btf: &KernelBtf) -> Result<TaskLayout, String> {
    let offset = |ty: &str, field: &str| {
        btf.offset_of(ty, field)
            .ok_or_else(|| format!("struct {ty}'s {field}"))
    };
    Ok(TaskLayout {
        ready: 1,
        task_cgroups: offset("task_struct", "cgroups")?,
        css_set_dfl_cgrp: offset("css_set", "dfl_cgrp")?,
        cgroup_kn: offset("cgroup", "kn")?,
        kn_id: offset("kernfs_node", "id")?,
        task_nsproxy: offset("task_struct", "nsproxy")?,
        nsproxy_net_ns: offset("nsproxy", "net_ns")?,
        net_cookie: offset("net", "net_cookie")?,
    })
}

/// Bytes after a type's 12-byte record, by kind (`btf.h`).
fn trailer_len(kind: u32, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        // INT, VAR, DECL_TAG: one word.
        1 | 14 | 17 => 4,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
        2 | 7..=12 | 16 | 18 => 0,
        // ARRAY: element type, index type, count.
        3 => 12,
        // STRUCT, UNION, DATASEC, ENUM64: three words per member.
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM, FUNC_PROTO: two words per member.
        6 | 13 => 8 * vlen,
        _ => return Err(BtfError::Malformed("unknown type kind")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob with `struct outer { int a; union { long b; }; int c:3; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0outer\0a\0b\0c\0int\0long\0".to_vec();
        let name = |s: &str| {
            let pos = strings
                .windows(s.len() + 2)
                .position(|w| w[0] == 0 && &w[1..=s.len()] == s.as_bytes() && w[s.len() + 1] == 0)
                .unwrap();
            (pos + 1) as u32
        };
        let mut types: Vec<u32> = Vec::new();
        // 1: int
        types.extend([name("int"), 1 << 24, 4, 32]);
        // 2: long
        types.extend([name("long"), 1 << 24, 8, 64]);
        // 3: anonymous union { long b; }
        types.extend([0, (5 << 24) | 1, 8, name("b"), 2, 0]);
        // 4: struct outer, kind flag set (bitfield sizes in the offsets).
        types.extend([name("outer"), (1 << 31) | (4 << 24) | 3, 24]);
        types.extend([name("a"), 1, 0]);
        types.extend([0, 3, 64]);
        types.extend([name("c"), 1, (3 << 24) | 128]);
        let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = Vec::new();
        out.extend(MAGIC.to_ne_bytes());
        out.extend([1u8, 0]);
        for word in [
            HEADER_LEN as u32,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            strings.len() as u32,
        ] {
            out.extend(word.to_ne_bytes());
        }
        out.extend(type_bytes);
        out.extend(strings);
        out
    }

    #[test]
    fn finds_members_directly_and_in_anonymous_unions() {
        let btf = KernelBtf::parse(blob()).unwrap();
        assert_eq!(btf.offset_of("outer", "a"), Some(0));
        assert_eq!(btf.offset_of("outer", "b"), Some(8));
        assert_eq!(btf.offset_of("outer", "c"), None, "a bitfield");
        assert_eq!(btf.offset_of("outer", "d"), None);
        assert_eq!(btf.offset_of("inner", "a"), None);
    }

    #[test]
    fn refuses_what_is_not_btf() {
        assert!(KernelBtf::parse(b"\x7fELF and more bytes than a header".to_vec()).is_err());
        let mut truncated = blob();
        truncated.truncate(40);
        assert!(KernelBtf::parse(truncated).is_err());
    }

    /// Agrees with btfparse on the running kernel, where it has BTF.
    #[test]
    fn agrees_with_a_full_parser_on_the_running_kernel() {
        let Ok(bytes) = fs::read(KERNEL_BTF) else {
            return;
        };
        let ours = KernelBtf::parse(bytes.clone()).unwrap();
        let theirs =
            btfparse::TypeInformation::new(&crate::apply::cgroup_layout::BtfBytes(bytes)).unwrap();
        for (ty, field) in [
            ("task_struct", "cgroups"),
            ("task_struct", "nsproxy"),
            ("css_set", "dfl_cgrp"),
            ("cgroup", "kn"),
            ("kernfs_node", "id"),
            ("nsproxy", "net_ns"),
            ("net", "net_cookie"),
            ("cgroup", "root"),
            ("cgroup", "level"),
            ("cgroup", "ancestors"),
            ("cgroup_root", "hierarchy_id"),
            ("kernfs_node", "name"),
        ] {
            let id = theirs.id_of(ty).unwrap();
            let Ok((_, btfparse::Offset::ByteOffset(want))) = theirs.offset_of(id, field) else {
                panic!("btfparse has no {ty}.{field}");
            };
            assert_eq!(ours.offset_of(ty, field), Some(want), "{ty}.{field}");
        }
    }
}
