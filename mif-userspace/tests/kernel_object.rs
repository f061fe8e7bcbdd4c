//! The kernel object that build.rs builds and `mif` embeds, read back the
//! way aya reads it at load time (aya-obj, the parser aya itself uses) and
//! checked without loading anything: what would otherwise only show when a
//! daemon starts. Needs no root.
//!
//! The kernel programs declare their maps with `#[map]` statics, whose
//! names are the statics' identifiers (aya-ebpf's `#[map]` takes no const):
//! these tests are what keeps them and `mif_common::names` one definition.
use std::{collections::BTreeSet, mem::size_of};

use aya_obj::{maps::PinningType, EbpfSectionKind, Object};
use mif_common::{names, Settings};

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
