//! The kernel object that build.rs builds and `mif` embeds, read back the
//! way aya reads it at load time (aya-obj, the parser aya itself uses) and
//! checked without loading anything: what would otherwise only show when a
//! daemon starts. Needs no root.
//!
//! The kernel programs declare their maps with `#[map]` statics, whose
//! names are the statics' identifiers (aya-ebpf's `#[map]` takes no const):
//! these tests are what keeps them and `mif_common::names` one definition.
//!
//! The object's BTF is checked too: when the kernel refuses it, aya only
//! logs a warning and loads the programs without BTF (no line info in
//! verifier logs), which went unnoticed at every start until the e2e suite
//! looked for the warning.
use std::{collections::BTreeSet, mem::size_of};

use aya_obj::{maps::PinningType, EbpfSectionKind, Object};
use btfparse::{Offset, TypeInformation, TypeVariant};
use mif::apply::cgroup_layout::BtfBytes;
use mif_common::{names, Settings};
use object::{Object as _, ObjectSection as _};

/// The same bytes as `mif::loader`'s `EBPF_OBJECT`: the object build.rs put
/// in this build's `OUT_DIR`, which integration tests share with the crate.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mif-ebpf"));

fn object() -> Object {
    Object::parse(OBJECT).expect("the embedded kernel object does not parse")
}

/// What one set has that the other lacks, both ways, or `None` when equal.
fn difference(
    what: &str,
    in_object: &BTreeSet<String>,
    in_names: &BTreeSet<String>,
) -> Option<String> {
    let missing: Vec<_> = in_object.difference(in_names).collect();
    let extra: Vec<_> = in_names.difference(in_object).collect();
    (!missing.is_empty() || !extra.is_empty()).then(|| {
        format!(
            "{what}: in the kernel object but not in mif_common::names: {missing:?}; \
             in mif_common::names but not in the kernel object: {extra:?}"
        )
    })
}

fn set_of(list: &[&str], what: &str) -> BTreeSet<String> {
    let set: BTreeSet<String> = list.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(set.len(), list.len(), "{what} lists a name twice: {list:?}");
    set
}

/// Every map the programs declare (`maps` and `.maps` sections; the data
/// maps aya makes of `.rodata`, `.data` and `.bss` are not the daemon's
/// business) is in `names::MAPS`, and nothing else is.
#[test]
fn the_objects_maps_are_exactly_names_maps() {
    let object = object();
    let declared: BTreeSet<String> = object
        .maps
        .iter()
        .filter(|(_, map)| {
            matches!(
                map.section_kind(),
                EbpfSectionKind::Maps | EbpfSectionKind::BtfMaps
            )
        })
        .map(|(name, _)| name.clone())
        .collect();
    let named = set_of(&names::MAPS, "names::MAPS");
    if let Some(diff) = difference("maps", &declared, &named) {
        panic!("{diff}");
    }
    for name in names::MAPS {
        // BPF_OBJ_NAME_LEN is 16 with the NUL: a longer name reaches the
        // kernel cut short, and `bpftool map` shows another name.
        assert!(
            name.len() <= 15,
            "map name {name} is longer than the kernel keeps (15)"
        );
        // names::MAPS is what the pin directory holds.
        assert_eq!(
            object.maps[name].pinning(),
            PinningType::ByName,
            "map {name} is not pinned by name"
        );
    }
}

/// The same for programs: the loader attaches `names::PROGRAMS` by name.
#[test]
fn the_objects_programs_are_exactly_names_programs() {
    let object = object();
    let declared: BTreeSet<String> = object.programs.keys().cloned().collect();
    let named = set_of(&names::PROGRAMS, "names::PROGRAMS");
    if let Some(diff) = difference("programs", &declared, &named) {
        panic!("{diff}");
    }
}

/// `names::GLOBAL_SETTINGS` is a global, not a map: the loader overrides
/// it with `must_exist`, which fails unless the object has a symbol of that
/// name exactly as large as `Settings`. Patched here the same way (aya-obj's
/// `patch_map_data` is what `EbpfLoader::override_global` calls), the
/// bytes must then land in `.rodata`, the read-only data the programs read
/// the settings from (the kernel freezes it, and the verifier may treat
/// its values as constants).
#[test]
fn the_settings_global_is_in_rodata_and_as_large_as_settings() {
    let mut object = object();
    let marker = vec![0xa5_u8; size_of::<Settings>()];
    object
        .patch_map_data([(names::GLOBAL_SETTINGS, (&marker[..], true))].into())
        .unwrap_or_else(|e| {
            panic!(
                "the loader could not set {} ({} bytes of Settings): {e}",
                names::GLOBAL_SETTINGS,
                size_of::<Settings>()
            )
        });
    let holders: Vec<_> = object
        .maps
        .iter()
        .filter(|(_, map)| map.data().windows(marker.len()).any(|w| w == marker))
        .map(|(name, map)| (name.clone(), map.section_kind()))
        .collect();
    assert!(
        matches!(&holders[..], [(_, EbpfSectionKind::Rodata)]),
        "{} should be patched into .rodata alone, went to {holders:?}",
        names::GLOBAL_SETTINGS
    );
}

/// The raw bytes of the object's ELF section `name`.
fn section(name: &str) -> &'static [u8] {
    let elf = object::File::parse(OBJECT).expect("the embedded kernel object is no ELF file");
    let section = elf
        .section_by_name(name)
        .unwrap_or_else(|| panic!("the kernel object has no {name} section"));
    section
        .data()
        .unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// A BTF name as the Rust source spells it: bpf-linker writes each
/// character not allowed in a C identifier as `_XX_` (its hex code), so
/// `Option<(u32, &Pvd)>` is `Option_3C__28_u32_2C__20__26_Pvd_29__3E_`.
fn rust_name(btf_name: &str) -> String {
    let mut out = String::new();
    let mut rest = btf_name;
    while let Some(i) = rest.find('_') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let code = rest
            .get(1..3)
            .filter(|_| rest.get(3..4) == Some("_"))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|c| c.is_ascii_punctuation() || *c == b' ');
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[4..];
            }
            None => {
                out.push('_');
                rest = &rest[1..];
            }
        }
    }
    out + rest
}

/// `union NAME (type id ID)`, for an anonymous union with the structs and
/// unions that hold it, which is where its Rust type shows.
fn describe_union(types: &TypeInformation, id: u32, name: Option<&str>) -> String {
    if let Some(name) = name {
        return format!("union {} (type id {id})", rust_name(name));
    }
    let holders: Vec<String> = types
        .get()
        .iter()
        .filter_map(|(holder, ty)| {
            let (kind, name, members) = match ty {
                TypeVariant::Struct(s) => ("struct", s.name(), s.member_list()),
                TypeVariant::Union(u) => ("union", u.name(), u.member_list()),
                _ => return None,
            };
            members.iter().any(|m| m.tid() == id).then(|| {
                let name = name.as_deref().map_or("<anonymous>".into(), rust_name);
                format!("{kind} {name} (type id {holder})")
            })
        })
        .collect();
    format!(
        "anonymous union (type id {id}) in {}",
        if holders.is_empty() {
            "no struct".to_owned()
        } else {
            holders.join(", ")
        }
    )
}

/// The kernel's BTF check (`btf_struct_check_meta` in kernel/bpf/btf.c)
/// refuses a union any of whose members is not at offset 0 ("Invalid
/// member bits_offset"), and with it the whole object's BTF. A BPF
/// subprogram taking an `Option<(u32, &Pvd)>` made one (an enum's BTF is
/// a union of its variants, at 0, and of its discriminant, at the
/// discriminant's offset: here the reference's niche, bit 64), so the
/// kernel refused the BTF at every start. Every member of every union must
/// be at offset 0.
#[test]
fn no_btf_union_has_a_member_at_a_nonzero_offset() {
    let types = TypeInformation::new(&BtfBytes(section(".BTF")))
        .unwrap_or_else(|e| panic!("the object's .BTF does not parse: {e:?}"));
    // A reader that found nothing would pass anything: every program is a
    // BTF function.
    let functions: BTreeSet<&str> = types
        .get()
        .values()
        .filter_map(|ty| match ty {
            TypeVariant::Func(f) => f.name().as_deref(),
            _ => None,
        })
        .collect();
    for program in names::PROGRAMS {
        assert!(
            functions.contains(program),
            "program {program} is no function in the object's BTF ({} types read)",
            types.get().len()
        );
    }
    let mut offending = Vec::new();
    for (&id, ty) in types.get() {
        let TypeVariant::Union(union) = ty else {
            continue;
        };
        for member in union.member_list() {
            let bits = match member.offset() {
                Offset::ByteOffset(bytes) => bytes * 8,
                Offset::BitOffsetAndSize(bits, _) => bits,
            };
            if bits != 0 {
                offending.push(format!(
                    "{}: member {} at bit {bits}",
                    describe_union(&types, id, union.name().as_deref()),
                    member.name().as_deref().unwrap_or("<anonymous>"),
                ));
            }
        }
    }
    assert!(
        offending.is_empty(),
        "the kernel refuses BTF with a union member at a non-zero offset \
         (a BPF function taking or returning an Option of a tuple or struct \
         is the usual cause: pass its parts instead):\n{}",
        offending.join("\n")
    );
}

/// A little-endian u32 at `at` in `data` (the object is bpfel), if there.
fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// The NUL-terminated string at `offset` in `.BTF`'s string section.
fn btf_string(btf: &[u8], offset: u32) -> String {
    // struct btf_header: magic u16, version u8, flags u8, hdr_len,
    // type_off, type_len, str_off, str_len (u32 each).
    let hdr_len = u32_at(btf, 4).expect(".BTF header") as usize;
    let str_off = u32_at(btf, 16).expect(".BTF header") as usize;
    let start = hdr_len + str_off + offset as usize;
    let tail = btf.get(start..).expect("a string offset past .BTF");
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .expect("an unterminated string");
    String::from_utf8_lossy(&tail[..end]).into_owned()
}

/// Line info is what lets a verifier log name the source line of each
/// instruction: the object's `.BTF.ext` must carry it for the ELF section of
/// every program. Read by hand (the header and the line info's section
/// records) because no parser here exposes it: aya-obj keeps its `BtfExt`
/// fields crate-private and btfparse reads `.BTF` only.
#[test]
fn btf_ext_has_line_info_for_every_program() {
    let ext = section(".BTF.ext");
    // struct btf_ext_header: magic u16 (0xeb9f), version u8, flags u8,
    // hdr_len, func_info_off, func_info_len, line_info_off, line_info_len
    // (u32 each); offsets count from the end of the header.
    assert_eq!(ext.get(..2), Some(&0xeb9f_u16.to_le_bytes()[..]), "magic");
    let field = |at| u32_at(ext, at).expect("a .BTF.ext header cut short") as usize;
    let (hdr_len, line_off, line_len) = (field(4), field(16), field(20));
    let lines = ext
        .get(hdr_len + line_off..hdr_len + line_off + line_len)
        .expect("line info past the end of .BTF.ext");
    // rec_size, then per ELF section: sec_name_off, num_info, and num_info
    // records of rec_size bytes.
    let rec_size = u32_at(lines, 0).expect("line info without its record size") as usize;
    assert!(rec_size >= 16, "line info records of {rec_size} bytes");
    let btf = section(".BTF");
    let mut covered = BTreeSet::new();
    let mut at = 4;
    while at < lines.len() {
        let name = u32_at(lines, at).expect("a line info section cut short");
        let count = u32_at(lines, at + 4).expect("a line info section cut short") as usize;
        if count > 0 {
            covered.insert(btf_string(btf, name));
        }
        at += 8 + count * rec_size;
    }
    assert_eq!(at, lines.len(), "line info records overrun their section");

    let elf = object::File::parse(OBJECT).unwrap();
    let missing: Vec<_> = object()
        .programs
        .iter()
        .map(|(program, p)| {
            let index = object::SectionIndex(p.section_index);
            let section = elf.section_by_index(index).unwrap();
            (program.clone(), section.name().unwrap().to_owned())
        })
        .filter(|(_, section)| !covered.contains(section))
        .collect();
    assert!(
        missing.is_empty(),
        "programs without line info (program, section): {missing:?}; line info covers {covered:?}"
    );
}
