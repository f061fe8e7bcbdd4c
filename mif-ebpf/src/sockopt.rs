//! What the sockopt programs do with the options that are not theirs.

/// Leaves an option to the kernel as it is: for `setsockopt`, the value the
/// application gave; for `getsockopt`, the answer the kernel gave. The
/// programs see at most a page of either. For a longer one (iptables'
/// rule dumps, `SO_PEERGROUPS` of a large group list) `optlen` 0 tells the
/// kernel to use the application's own buffer; an untouched `optlen` fails
/// the call with EFAULT before Linux 6.5 (and is logged after). Shorter
/// ones are left alone, so a program attached before ours that rewrote
/// one keeps its rewrite. (`optlen` -1 would skip the kernel's setsockopt
/// handler: the option would silently not be set.)
#[inline(always)]
pub fn pass_through(so: *mut aya_ebpf::bindings::bpf_sockopt) {
    // The smallest page size Linux runs with; with bigger pages, 0 for an
    // option between 4 KiB and a page means the same as untouched.
    const PAGE_SIZE: i32 = 4096;
    unsafe {
        if (*so).optlen > PAGE_SIZE {
            (*so).optlen = 0;
        }
    }
}
