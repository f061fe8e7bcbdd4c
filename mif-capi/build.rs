//! The shared library's SONAME: programs linked with `-lmif` record
//! `libmif.so.0`, the ABI's major version, not cargo's file name.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmif.so.0");
}
