//! For tests that need root (network namespaces, cgroups, BPF): one
//! decision whether they run or skip, shared by the unit tests and the
//! integration tests of this crate.

/// Set to `1` (as `.ci/run` does), a test that needs root fails when it
/// would otherwise skip: in CI a skipped test is a test that did not run.
pub const REQUIRE_ROOT_ENV: &str = "MIF_TESTS_REQUIRE_ROOT";

/// Whether a test that needs root can run: true as root; otherwise a note
/// on stderr and false, or a panic when [`REQUIRE_ROOT_ENV`] is `1`.
pub fn root_or_skip(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var(REQUIRE_ROOT_ENV).as_deref() == Ok("1") {
        panic!("{what} needs root, and {REQUIRE_ROOT_ENV}=1 forbids skipping it");
    }
    eprintln!("skipping {what}: needs root");
    false
}
