//! Netlink datagrams → events → the DNS servers learned from router
//! advertisements, as the daemon's event loop reduces them. The kernel
//! frames the datagrams; the RA options inside come from any host on the
//! link.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mif::{
    host::netlink::{decode_events, Interface, NetEvent},
    model::ra_learned::RaDns,
};

fuzz_target!(|data: &[u8]| {
    let events = decode_events(data);
    // A resync covers every change: nothing is queued beside it.
    if events.contains(&NetEvent::Resync) {
        assert!(
            events.iter().all(|e| !matches!(e, NetEvent::Changed(_))),
            "{events:?}"
        );
    }
    let now = Instant::now();
    let mut dns = RaDns::default();
    let mut interfaces = Vec::new();
    for event in &events {
        if let NetEvent::RaOptions { ifindex, rdnss, .. } = event {
            interfaces.push(Interface {
                name: format!("if{ifindex}"),
                index: *ifindex,
                up: true,
                loopback: false,
                kind: Default::default(),
                addrs: vec![],
                uplink4: None,
                uplink6: None,
                routes: vec![],
                routes_left_out: 0,
            });
            for option in rdnss {
                let servers: Vec<_> = option.servers.iter().map(|&s| s.into()).collect();
                // Lifetimes up to u32::MAX seconds: `now + lifetime` must
                // not overflow.
                dns.learn(*ifindex, &servers, option.lifetime, now);
            }
        }
    }
    let learned = dns.current(&interfaces, now);
    let later = dns.current(&interfaces, now + Duration::from_secs(u64::from(u32::MAX)));
    assert!(later.len() <= learned.len());
});
