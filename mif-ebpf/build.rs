//! Re-run the eBPF build when the linker changes, so a new bpf-linker
//! (or its LLVM) never leaves a stale object embedded in `mif`.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found; run `cargo xtask setup`"),
    }
}
