//! `lab-peer ra --dev IF --captive-portal URI [--lifetime SECONDS]`: sends
//! one router advertisement out of `IF` to all nodes (ff02::1), carrying
//! the captive portal's API URI (RFC 8910 option 37), for the option
//! radvd 2.19 cannot send (its `AdvCaptivePortalAPI` came in 2.20).
//!
//! The advertisement is what RFC 4861 asks of one: ICMPv6 type 134 from the
//! interface's link-local address (the kernel picks it for a link-local
//! multicast destination), hop limit 255 (a host drops any other). Its
//! router lifetime is `--lifetime` (default 0: the router announces
//! options without offering itself as a default router, so the host's
//! routes do not change); no prefix, no other option. The kernel computes
//! the checksum of raw ICMPv6 sockets.
use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd};

use super::Args;

/// ICMPv6 router advertisement.
const ND_ROUTER_ADVERT: u8 = 134;
/// RFC 8910 section 2.3.
const ND_OPT_CAPTIVE_PORTAL: u8 = 37;

pub fn ra(args: &Args) -> Result<(), String> {
    let dev = args.required("dev")?;
    let uri = args.required("captive-portal")?;
    let lifetime: u16 = args.parsed("lifetime")?.unwrap_or(0);
    let ifindex = nix::net::if_::if_nametoindex(dev).map_err(|e| format!("{dev}: {e}"))?;
    let packet = advertisement(uri, lifetime)?;

    // SAFETY: plain socket(2); the fd is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int(&fd, libc::IPV6_MULTICAST_HOPS, 255)?;
    set_int(&fd, libc::IPV6_MULTICAST_IF, ifindex as i32)?;
    let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    to.sin6_addr.s6_addr = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    to.sin6_scope_id = ifindex;
    // SAFETY: the buffer and the address outlive the call; sizes are theirs.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::from_ref(&to).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(format!("sendto: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The ICMPv6 message: the RA header (RFC 4861 section 4.2), then option
/// 37: type, length in 8-octet units, the URI NUL-padded to the unit.
fn advertisement(uri: &str, lifetime: u16) -> Result<Vec<u8>, String> {
    let mut packet = vec![ND_ROUTER_ADVERT, 0, 0, 0, 64, 0];
    packet.extend_from_slice(&lifetime.to_be_bytes());
    packet.extend_from_slice(&[0; 8]); // reachable time, retrans timer
    let mut option = vec![ND_OPT_CAPTIVE_PORTAL, 0];
    option.extend_from_slice(uri.as_bytes());
    option.resize(option.len().next_multiple_of(8), 0);
    option[1] = u8::try_from(option.len() / 8).map_err(|_| "URI too long for an option")?;
    packet.extend_from_slice(&option);
    Ok(packet)
}

fn set_int(fd: &OwnedFd, option: libc::c_int, value: libc::c_int) -> Result<(), String> {
    // SAFETY: a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IPV6,
            option,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(format!(
            "setsockopt({option}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
