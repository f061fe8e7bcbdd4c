//! Router advertisement options the kernel hands to userspace.
//!
//! The kernel acts on the parts of a router advertisement it understands
//! (prefixes, routes, MTU) itself and passes the others on as
//! `RTM_NEWNDUSEROPT` messages to the `RTNLGRP_ND_USEROPT` group, one message
//! per option: RDNSS and DNSSL (RFC 8106), the captive portal's API URI
//! (RFC 8910 option 37, passed up since Linux 5.3), but also prefix
//! information and PREF64 (net/ipv6/ndisc.c `ndisc_is_useropt`). netlink-packet-route 0.34 has no type for
//! these messages (its parser fails on them, and netlink-proto then logs and
//! drops them), so they are parsed here from the raw payload.
//!
//! The payload is `struct nduseroptmsg` (linux/rtnetlink.h), the option
//! bytes exactly as they were on the wire, then netlink attributes:
//!
//! ```text
//! u8 family  u8 pad1  u16 opts_len  i32 ifindex  u8 icmp_type  u8 icmp_code
//! u16 pad2   u32 pad3                                       (native endian)
//! opts_len bytes of ND options                              (network order)
//! attributes: NDUSEROPT_SRCADDR = 1, the router's address
//! ```

use std::{net::Ipv6Addr, time::Duration};

use super::frames;

/// `ND_OPT_RDNSS`: recursive DNS servers (RFC 8106 section 5.1).
const ND_OPT_RDNSS: u8 = 25;
/// `ND_OPT_DNSSL`: DNS search list (RFC 8106 section 5.2).
const ND_OPT_DNSSL: u8 = 31;
/// `ND_OPT_CAPTIVE_PORTAL`: the captive portal's API URI (RFC 8910
/// section 2.3; RFC 7710 named it the portal's URI).
const ND_OPT_CAPTIVE_PORTAL: u8 = 37;
/// `ND_ROUTER_ADVERT`, the ICMPv6 type of a router advertisement.
const ND_ROUTER_ADVERT: u8 = 134;
/// `NDUSEROPT_SRCADDR`: the IPv6 source address of the advertisement.
const NDUSEROPT_SRCADDR: u16 = 1;
/// `sizeof(struct nduseroptmsg)`.
const HEADER_LEN: usize = 16;
/// RFC 1035: a label has at most 63 octets (the top bits of the length
/// octet mark compression pointers, which RFC 8106 forbids here), a whole
/// name at most 255 octets on the wire.
const MAX_LABEL: usize = 63;
const MAX_NAME: usize = 255;

/// Recursive DNS servers advertised by a router (RFC 8106 RDNSS option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rdnss {
    pub servers: Vec<Ipv6Addr>,
    /// How long the servers may be used, from the advertisement's arrival.
    /// Zero withdraws them; `u32::MAX` seconds means forever (RFC 8106).
    pub lifetime: Duration,
}

/// A DNS search list advertised by a router (RFC 8106 DNSSL option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnssl {
    /// Domain names without the trailing dot, each label checked to hold
    /// only letters, digits, `-` and `_`, so a name can go into a resolver
    /// configuration file as it is.
    pub domains: Vec<String>,
    /// As for [`Rdnss::lifetime`].
    pub lifetime: Duration,
}

/// The options of one `RTM_NEWNDUSEROPT` message. Options of other types
/// (prefix information, PREF64, ...) are skipped, so everything can be
/// empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaOptions {
    /// The interface the advertisement arrived on.
    pub ifindex: u32,
    /// The router's (link-local) address; the kernel always sends it, but a
    /// message without one is still usable.
    pub router: Option<Ipv6Addr>,
    pub rdnss: Vec<Rdnss>,
    pub dnssl: Vec<Dnssl>,
    /// The captive portal's API URI (option 37), as the router sent it
    /// less the NUL padding, checked by
    /// [`crate::host::captive_portal::clean_uri`]. The option has no
    /// lifetime of its own (see [`crate::model::ra_learned`]).
    pub captive_portal: Option<String>,
}

impl RaOptions {
    /// Whether the message carried nothing mif uses.
    pub fn is_empty(&self) -> bool {
        self.rdnss.is_empty() && self.dnssl.is_empty() && self.captive_portal.is_none()
    }
}

/// Why an `RTM_NEWNDUSEROPT` payload was rejected. RFC 4861 and 8106 say a
/// malformed option is ignored, so callers log these and move on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaParseError {
    #[error("truncated {0}")]
    Truncated(&'static str),

    #[error("not an IPv6 message (family {0})")]
    NotIpv6(u8),

    #[error("not from a router advertisement (ICMPv6 type {0})")]
    NotRouterAdvertisement(u8),

    #[error("invalid interface index {0}")]
    BadIfindex(i32),

    #[error("option of type {0} with length 0")]
    ZeroLength(u8),

    #[error("option of type {option} with invalid length {units} (in 8-octet units)")]
    BadLength { option: u8, units: u8 },

    #[error("invalid domain name in DNSSL option: {0}")]
    BadDomain(&'static str),

    #[error("captive portal option without a usable URI (empty, too long, or not URI characters)")]
    BadCaptivePortal,
}

/// Parses the payload of an `RTM_NEWNDUSEROPT` message (what follows the
/// `nlmsghdr`).
pub fn parse_nduseropt(payload: &[u8]) -> Result<RaOptions, RaParseError> {
    let header = payload
        .get(..HEADER_LEN)
        .ok_or(RaParseError::Truncated("nduseroptmsg header"))?;
    let family = header[0];
    if family != libc::AF_INET6 as u8 {
        return Err(RaParseError::NotIpv6(family));
    }
    let opts_len = usize::from(u16::from_ne_bytes([header[2], header[3]]));
    let ifindex = i32::from_ne_bytes([header[4], header[5], header[6], header[7]]);
    let icmp_type = header[8];
    if icmp_type != ND_ROUTER_ADVERT {
        return Err(RaParseError::NotRouterAdvertisement(icmp_type));
    }
    let ifindex = u32::try_from(ifindex)
        .ok()
        .filter(|&index| index > 0)
        .ok_or(RaParseError::BadIfindex(ifindex))?;
    let opts = payload
        .get(HEADER_LEN..HEADER_LEN + opts_len)
        .ok_or(RaParseError::Truncated("option bytes"))?;
    // Options come in 8-octet units, so the attributes that follow are
    // already at netlink's 4-octet alignment; align anyway in case not.
    let attrs = payload
        .get(HEADER_LEN + opts_len.next_multiple_of(frames::ALIGN)..)
        .unwrap_or_default();

    let mut options = RaOptions {
        ifindex,
        router: source_address(attrs)?,
        rdnss: Vec::new(),
        dnssl: Vec::new(),
        captive_portal: None,
    };
    let mut rest = opts;
    while !rest.is_empty() {
        let [kind, units, ..] = *rest else {
            return Err(RaParseError::Truncated("option header"));
        };
        if units == 0 {
            // RFC 4861 4.6: a zero length would loop forever; the packet
            // is invalid.
            return Err(RaParseError::ZeroLength(kind));
        }
        let (option, next) = rest
            .split_at_checked(usize::from(units) * 8)
            .ok_or(RaParseError::Truncated("option"))?;
        match kind {
            ND_OPT_RDNSS => options.rdnss.push(rdnss(option)?),
            ND_OPT_DNSSL => options.dnssl.push(dnssl(option)?),
            // Type, length, then the URI, NUL-padded to the 8-octet unit.
            ND_OPT_CAPTIVE_PORTAL => {
                options.captive_portal = Some(
                    crate::host::captive_portal::clean_uri(&option[2..])
                        .ok_or(RaParseError::BadCaptivePortal)?,
                )
            }
            _ => {}
        }
        rest = next;
    }
    Ok(options)
}

/// The `NDUSEROPT_SRCADDR` attribute, if present. An attribute that cannot
/// be framed rejects the message, as a truncated option does: nothing
/// after it can be trusted to be where it seems.
fn source_address(attrs: &[u8]) -> Result<Option<Ipv6Addr>, RaParseError> {
    let mut router = None;
    for attr in frames::attributes(attrs) {
        let attr = attr.map_err(|_| RaParseError::Truncated("attribute"))?;
        if attr.kind == NDUSEROPT_SRCADDR {
            let addr: [u8; 16] = attr
                .value
                .try_into()
                .map_err(|_| RaParseError::Truncated("source address attribute"))?;
            router = Some(Ipv6Addr::from(addr));
        }
    }
    Ok(router)
}

/// An RDNSS option: type, length, 2 reserved octets, lifetime, then the
/// servers. Its length is 1 + 2 per server.
fn rdnss(option: &[u8]) -> Result<Rdnss, RaParseError> {
    let units = option[1];
    if units < 3 || units.is_multiple_of(2) {
        return Err(RaParseError::BadLength {
            option: ND_OPT_RDNSS,
            units,
        });
    }
    let servers = option[8..]
        .chunks_exact(16)
        .map(|chunk| Ipv6Addr::from(<[u8; 16]>::try_from(chunk).expect("16-octet chunk")))
        .collect();
    Ok(Rdnss {
        servers,
        lifetime: lifetime(option),
    })
}

/// A DNSSL option: type, length, 2 reserved octets, lifetime, then domain
/// names in DNS wire format (uncompressed), zero-padded to 8 octets.
fn dnssl(option: &[u8]) -> Result<Dnssl, RaParseError> {
    let units = option[1];
    if units < 2 {
        return Err(RaParseError::BadLength {
            option: ND_OPT_DNSSL,
            units,
        });
    }
    Ok(Dnssl {
        domains: domain_names(&option[8..])?,
        lifetime: lifetime(option),
    })
}

/// The lifetime field shared by RDNSS and DNSSL, octets 4..8.
fn lifetime(option: &[u8]) -> Duration {
    let secs = u32::from_be_bytes([option[4], option[5], option[6], option[7]]);
    Duration::from_secs(secs.into())
}

/// Decodes a run of wire-format names. A zero octet where a name would
/// start is padding (only allowed after the last name by the RFC, but
/// harmless anywhere).
fn domain_names(mut data: &[u8]) -> Result<Vec<String>, RaParseError> {
    let mut domains = Vec::new();
    let mut name = String::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = usize::from(len);
        data = rest;
        if len == 0 {
            if !name.is_empty() {
                domains.push(std::mem::take(&mut name));
            }
            continue;
        }
        if len > MAX_LABEL {
            return Err(RaParseError::BadDomain("label too long or compressed"));
        }
        let (label, rest) = data
            .split_at_checked(len)
            .ok_or(RaParseError::BadDomain("label runs past the option"))?;
        data = rest;
        // Anything else (spaces, newlines, dots inside a label) could
        // smuggle extra words into a resolver configuration.
        if !label
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(RaParseError::BadDomain("label with invalid characters"));
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|&c| char::from(c)));
        // The wire form is one length octet more than the dotted form,
        // plus the final zero octet.
        if name.len() + 2 > MAX_NAME {
            return Err(RaParseError::BadDomain("name longer than 255 octets"));
        }
    }
    if !name.is_empty() {
        return Err(RaParseError::BadDomain("name without its final zero octet"));
    }
    Ok(domains)
}

/// An `RTM_NEWNDUSEROPT` payload as the kernel builds it
/// (`ndisc_ra_useropt`): header, options, source address attribute; for
/// the tests here and in [`super::events`].
#[cfg(test)]
pub(super) fn test_payload(ifindex: i32, opts: &[u8], router: Option<Ipv6Addr>) -> Vec<u8> {
    let mut msg = vec![libc::AF_INET6 as u8, 0];
    msg.extend_from_slice(&u16::try_from(opts.len()).unwrap().to_ne_bytes());
    msg.extend_from_slice(&ifindex.to_ne_bytes());
    msg.extend_from_slice(&[ND_ROUTER_ADVERT, 0, 0, 0, 0, 0, 0, 0]);
    msg.extend_from_slice(opts);
    if let Some(router) = router {
        frames::push_attribute(&mut msg, NDUSEROPT_SRCADDR, &router.octets());
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::{test_payload as message, *};

    const ROUTER: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x1, 0x2, 0x3, 0x4);

    fn addr(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn rdnss_with_one_server() {
        #[rustfmt::skip]
        let opts = [
            25, 3, 0, 0,               // RDNSS, 3 * 8 octets, reserved
            0x00, 0x00, 0x0e, 0x10,    // lifetime 3600 s
            0x20, 0x01, 0x0d, 0xb8, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53,
        ];
        let parsed = parse_nduseropt(&message(7, &opts, Some(ROUTER))).unwrap();
        assert_eq!(
            parsed,
            RaOptions {
                ifindex: 7,
                router: Some(ROUTER),
                rdnss: vec![Rdnss {
                    servers: vec![addr("2001:db8:7::53")],
                    lifetime: Duration::from_secs(3600),
                }],
                dnssl: vec![],
                captive_portal: None,
            }
        );
        assert!(!parsed.is_empty());
    }

    #[test]
    fn rdnss_with_two_servers() {
        #[rustfmt::skip]
        let opts = [
            25, 5, 0, 0,               // RDNSS, 5 * 8 octets
            0xff, 0xff, 0xff, 0xff,    // infinite lifetime
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
        ];
        let parsed = parse_nduseropt(&message(3, &opts, None)).unwrap();
        assert_eq!(parsed.router, None);
        assert_eq!(
            parsed.rdnss,
            [Rdnss {
                servers: vec![addr("2001:db8::1"), addr("2001:db8::2")],
                lifetime: Duration::from_secs(u32::MAX.into()),
            }]
        );
    }

    #[test]
    fn dnssl_with_two_domains() {
        #[rustfmt::skip]
        let opts = [
            31, 5, 0, 0,               // DNSSL, 5 * 8 octets
            0, 0, 0x02, 0x58,          // lifetime 600 s
            7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 4, b't', b'e', b's', b't', 0,
            4, b'c', b'o', b'r', b'p', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0,
            0, 0, 0, 0,                // padding to 40 octets
        ];
        let parsed = parse_nduseropt(&message(2, &opts, Some(ROUTER))).unwrap();
        assert_eq!(
            parsed.dnssl,
            [Dnssl {
                domains: vec!["example.test".into(), "corp.example".into()],
                lifetime: Duration::from_secs(600),
            }]
        );
        assert!(parsed.rdnss.is_empty());
    }

    #[test]
    fn captive_portal_uri_without_its_padding() {
        // RFC 8910 section 2.3: type 37, length in 8-octet units, the URI
        // NUL-padded to the unit ("https://portal.lab/api" is 22 octets:
        // 2 + 22 = 24, exactly 3 units; one more octet needs padding).
        for uri in ["https://portal.lab/api", "https://portal.lab/api2"] {
            let mut opts = vec![37, 0];
            opts.extend_from_slice(uri.as_bytes());
            opts.resize(opts.len().next_multiple_of(8), 0);
            opts[1] = u8::try_from(opts.len() / 8).unwrap();
            let parsed = parse_nduseropt(&message(4, &opts, Some(ROUTER))).unwrap();
            assert_eq!(parsed.captive_portal.as_deref(), Some(uri));
            assert!(!parsed.is_empty());
        }
        // All padding, and a URI with a blank in it: refused.
        assert_eq!(
            parse_nduseropt(&message(4, &[37, 1, 0, 0, 0, 0, 0, 0], None)),
            Err(RaParseError::BadCaptivePortal)
        );
        assert_eq!(
            parse_nduseropt(&message(4, &[37, 1, b'a', b' ', b'b', 0, 0, 0], None)),
            Err(RaParseError::BadCaptivePortal)
        );
    }

    #[test]
    fn unknown_options_are_skipped() {
        // A prefix information option (type 3, 32 octets) and a PREF64
        // option (type 38) around an RDNSS option.
        let mut opts = vec![3, 4, 64, 0xc0];
        opts.resize(32, 0);
        opts.extend_from_slice(&[25, 3, 0, 0, 0, 0, 0, 60]);
        opts.extend_from_slice(&addr("2001:db8::53").octets());
        opts.extend_from_slice(&[38, 2, 0, 0, 0x20, 0x01, 0x0d, 0xb8]);
        opts.extend_from_slice(&[0; 8]);
        let parsed = parse_nduseropt(&message(4, &opts, Some(ROUTER))).unwrap();
        assert_eq!(parsed.rdnss.len(), 1);
        assert_eq!(parsed.rdnss[0].servers, [addr("2001:db8::53")]);
        assert_eq!(parsed.captive_portal, None);

        // The kernel sends the prefix option on its own: nothing for mif.
        let parsed = parse_nduseropt(&message(4, &opts[..32], Some(ROUTER))).unwrap();
        assert!(parsed.is_empty());
    }

    #[test]
    fn truncated_option_is_rejected() {
        // Claims 3 * 8 octets, but only 16 are there.
        let opts = [25, 3, 0, 0, 0, 0, 0, 60, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0];
        assert_eq!(
            parse_nduseropt(&message(4, &opts, None)),
            Err(RaParseError::Truncated("option"))
        );
        // The header's opts_len runs past the end of the message.
        let mut msg = message(4, &[25, 3, 0, 0, 0, 0, 0, 60], None);
        msg[2..4].copy_from_slice(&24u16.to_ne_bytes());
        assert_eq!(
            parse_nduseropt(&msg),
            Err(RaParseError::Truncated("option bytes"))
        );
        assert_eq!(
            parse_nduseropt(&msg[..10]),
            Err(RaParseError::Truncated("nduseroptmsg header"))
        );
        // A source address attribute cut short.
        let msg = message(4, &[], Some(ROUTER));
        assert_eq!(
            parse_nduseropt(&msg[..msg.len() - 4]),
            Err(RaParseError::Truncated("attribute"))
        );
        // An attribute claiming less than its own header: nothing after it
        // can be found.
        let mut msg = message(4, &[], Some(ROUTER));
        msg[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(
            parse_nduseropt(&msg),
            Err(RaParseError::Truncated("attribute"))
        );
    }

    #[test]
    fn malformed_options_are_rejected() {
        let parse = |opts: &[u8]| parse_nduseropt(&message(4, opts, None));
        assert_eq!(
            parse(&[25, 0, 0, 0, 0, 0, 0, 0]),
            Err(RaParseError::ZeroLength(25))
        );
        // An RDNSS option without a server, and one with half a server.
        assert_eq!(
            parse(&[25, 1, 0, 0, 0, 0, 0, 60]),
            Err(RaParseError::BadLength {
                option: 25,
                units: 1
            })
        );
        let mut half = vec![25, 2, 0, 0, 0, 0, 0, 60];
        half.resize(16, 0);
        assert!(matches!(
            parse(&half),
            Err(RaParseError::BadLength { units: 2, .. })
        ));
        // DNSSL: a compression pointer, a space in a label, a label past
        // the end, a name without its final zero octet.
        for names in [
            &[0xc0, 0x0c, 0, 0, 0, 0, 0, 0][..],
            b"\x03a b\x00\x00\x00\x00",
            b"\x09abc\x00\x00\x00\x00",
            b"\x03abc\x03def",
        ] {
            let mut opts = vec![31, 2, 0, 0, 0, 0, 0, 60];
            opts.extend_from_slice(names);
            assert!(
                matches!(parse(&opts), Err(RaParseError::BadDomain(_))),
                "{names:?}: {:?}",
                parse(&opts)
            );
        }
    }

    #[test]
    fn only_router_advertisements_count() {
        let mut msg = message(4, &[], None);
        msg[8] = 137; // redirect
        assert_eq!(
            parse_nduseropt(&msg),
            Err(RaParseError::NotRouterAdvertisement(137))
        );
        let mut msg = message(4, &[], None);
        msg[0] = libc::AF_INET as u8;
        assert!(matches!(
            parse_nduseropt(&msg),
            Err(RaParseError::NotIpv6(_))
        ));
        assert_eq!(
            parse_nduseropt(&message(0, &[], None)),
            Err(RaParseError::BadIfindex(0))
        );
    }
}
