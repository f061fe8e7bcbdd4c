//! The captive-portal API URI a network announces (RFC 8910: RA option 37,
//! DHCPv4 option 114), as mif keeps it: checked once, where it is read
//! (router advertisements, lease files), so everything after can show it
//! and hand it to a probe as it is.
//!
//! The URI is the network's to choose, and mif does not fetch it here; it
//! only refuses what cannot be a URI at all, so that nothing a router or
//! a DHCP server sends can put control characters, blanks or non-ASCII
//! bytes into logs, `mif pvd list` or a terminal. The value
//! `urn:ietf:params:capport:unrestricted` (RFC 8910 section 2: the network
//! has no captive portal) is a URI like any other and is kept as it is.

/// Longest URI kept. RFC 8910 section 2 says no URI longer than 255
/// bytes should be provisioned (DHCPv4 cannot carry more); an RA option
/// could carry 2038.
pub const MAX_URI: usize = 2038;

/// `bytes` as a captive-portal URI: trailing NUL padding (RA option 37)
/// removed; `None` when empty, longer than [`MAX_URI`] or holding a byte
/// RFC 3986 allows nowhere in a URI (only ASCII letters, digits and
/// `-._~:/?#[]@!$&'()*+,;=%` are).
pub fn clean_uri(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let uri = &bytes[..end];
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b);
    if uri.is_empty() || uri.len() > MAX_URI || !uri.iter().all(|&b| allowed(b)) {
        return None;
    }
    // Only ASCII is left: always UTF-8.
    String::from_utf8(uri.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_kept_as_sent_and_garbage_refused() {
        assert_eq!(
            clean_uri(b"https://portal.example/api?x=1&y=%20\0\0\0").as_deref(),
            Some("https://portal.example/api?x=1&y=%20")
        );
        assert_eq!(
            clean_uri(b"urn:ietf:params:capport:unrestricted").as_deref(),
            Some("urn:ietf:params:capport:unrestricted")
        );
        for bad in [
            &b""[..],
            b"\0\0\0\0",
            b"https://portal.example/a b",
            b"https://portal.example/\n",
            b"https://portal.example/\x1b[2J",
            "https://portál.example/".as_bytes(),
            b"https://portal.example/\0tail",
        ] {
            assert_eq!(clean_uri(bad), None, "{bad:?}");
        }
        assert!(clean_uri(&vec![b'a'; MAX_URI]).is_some());
        assert!(clean_uri(&vec![b'a'; MAX_URI + 1]).is_none());
    }
}
