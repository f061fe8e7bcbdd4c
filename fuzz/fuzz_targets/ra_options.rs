//! The RDNSS/DNSSL option parser (RFC 8106) on any `RTM_NEWNDUSEROPT`
//! payload: what it returns is safe to write into a resolver configuration.
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
});
