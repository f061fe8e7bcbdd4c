//! Socket address layouts for `bpf_bind` and address tests. Addresses are in
//! network byte order, as the kernel stores them in the context.

pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;

#[repr(C)]
pub struct SockaddrIn6 {
    family: u16,
    port: u16,
    flowinfo: u32,
    addr: [u32; 4],
    scope_id: u32,
}

impl SockaddrIn6 {
    /// `addr` in network byte order; port 0 so connect() picks the port
    /// (a fixed port would serialise connects on it).
    pub fn new(addr: [u32; 4]) -> Self {
        Self {
            family: AF_INET6 as u16,
            port: 0,
            flowinfo: 0,
            addr,
            scope_id: 0,
        }
    }
}

/// 127.0.0.0/8; the first octet is the lowest byte of a network-order u32 on
/// bpfel.
#[inline(always)]
pub fn is_loopback4(addr: u32) -> bool {
    addr.to_ne_bytes()[0] == 127
}

/// `::1` as the kernel keeps it (four words in network byte order).
pub const LOOPBACK6: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];

/// ::1
#[inline(always)]
pub fn is_loopback6(addr: &[u32; 4]) -> bool {
    *addr == LOOPBACK6
}

/// Writes an IPv6 address into a context field. The fields (`user_ip6`,
/// `msg_src_ip6`) are only 4-byte aligned: the verifier wants one 32-bit
/// store per word, so they are written one at a time.
#[inline(always)]
pub fn write_ip6(dst: *mut [u32; 4], words: &[u32; 4]) {
    unsafe {
        core::ptr::write_volatile(&raw mut (*dst)[0], words[0]);
        core::ptr::write_volatile(&raw mut (*dst)[1], words[1]);
        core::ptr::write_volatile(&raw mut (*dst)[2], words[2]);
        core::ptr::write_volatile(&raw mut (*dst)[3], words[3]);
    }
}

/// ::ffff:a.b.c.d
#[inline(always)]
pub fn is_v4_mapped(addr: &[u32; 4]) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

/// fe80::/10, whose scope (an interface) comes with the socket address.
#[inline(always)]
pub fn is_link_local6(addr: &[u32; 4]) -> bool {
    let first = addr[0].to_ne_bytes();
    first[0] == 0xfe && first[1] & 0xc0 == 0x80
}

/// `type` of raw IP sockets: any protocol, and with IP_HDRINCL any header.
pub const SOCK_RAW: u32 = 3;
