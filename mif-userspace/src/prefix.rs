//! Address prefix arithmetic, for every layer that needs it (the model's
//! on-link prefixes, the routes mif installs, configured exclusions).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `addr` with the host bits of a `/len` prefix cleared. A length beyond
/// the family's (netlink does not forbid one) is the whole address: the
/// subtraction used to overflow and panic (found by fuzzing).
pub fn network(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32u32.saturating_sub(len.into()))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128u32.saturating_sub(len.into()))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz target pvd_state): a prefix longer than the
    /// family's overflowed a subtraction and panicked.
    #[test]
    fn network_of_an_overlong_prefix_is_the_address() {
        let v4: IpAddr = "198.18.3.77".parse().unwrap();
        let v6: IpAddr = "2001:db8:1::9".parse().unwrap();
        for len in [33, 128, 129, 255] {
            assert_eq!(network(v4, len), v4);
        }
        assert_eq!(network(v6, 129), v6);
        assert_eq!(network(v6, 255), v6);
        assert_eq!(network(v6, 128), v6);
        assert_eq!(network(v6, 0), "::".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn network_clears_host_bits() {
        assert_eq!(
            network("198.18.3.77".parse().unwrap(), 24),
            "198.18.3.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network("2001:db8:1::9".parse().unwrap(), 48),
            "2001:db8:1::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            network("1.2.3.4".parse().unwrap(), 0),
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
    }
}
