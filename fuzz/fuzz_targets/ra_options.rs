//! The RDNSS/DNSSL option parser (RFC 8106) on any `RTM_NEWNDUSEROPT`
//! payload: what it returns is safe to write into a resolver configuration;
//! a captive portal URI (RFC 8910) holds only URI characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mif::host::netlink::parse_nduseropt;

fuzz_target!(|data: &[u8]| {
    let Ok(options) = parse_nduseropt(data) else {
        return;
    };
    assert!(options.ifindex > 0);
    for list in &options.dnssl {
        for domain in &list.domains {
            assert!(!domain.is_empty() && domain.len() <= 253, "{domain:?}");
            assert!(
                domain
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')),
                "{domain:?}"
            );
        }
    }
    if let Some(uri) = &options.captive_portal {
        assert!(!uri.is_empty(), "{uri:?}");
        assert!(
            uri.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&c)),
            "{uri:?}"
        );
    }
});
