//! IPv4 networks (CIDR): parsing, containment and the arithmetic playbooks need on the
//! addresses they read from a node (a subnet's network, an address of another node's
//! pods). The node-network playbooks of the field reports are IPv4 only; an IPv6 text
//! parses to None and so never matches.

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 address with a prefix length: `10.244.1.1/24` (the address is kept as given;
/// [`Net::network`] zeroes the host bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Net {
    pub addr: u32,
    pub len: u8,
}

impl Net {
    /// `A.B.C.D/LEN`, `A.B.C.D` (a /32, as `ip route` prints a host route) or `default`
    /// (0.0.0.0/0). None for anything else (IPv6, a name, a bad length).
    pub fn parse(s: &str) -> Option<Net> {
        let s = s.trim();
        if s == "default" {
            return Some(Net { addr: 0, len: 0 });
        }
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, l.parse::<u8>().ok().filter(|l| *l <= 32)?),
            None => (s, 32),
        };
        let addr: Ipv4Addr = a.parse().ok()?;
        Some(Net {
            addr: u32::from(addr),
            len,
        })
    }

    pub fn mask(self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    /// The network: host bits zeroed (`10.244.1.1/24` -> `10.244.1.0/24`).
    pub fn network(self) -> Net {
        Net {
            addr: self.addr & self.mask(),
            len: self.len,
        }
    }

    /// Is `other` (an address or a network) inside this network? A network contains
    /// itself and every longer prefix within it; never a shorter one.
    pub fn contains(self, other: Net) -> bool {
        other.len >= self.len && (other.addr & self.mask()) == (self.addr & self.mask())
    }

    /// Is this address inside the network (`net` given as any address in it)?
    pub fn contains_addr(self, addr: u32) -> bool {
        (addr & self.mask()) == (self.addr & self.mask())
    }

    pub fn address(self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    /// Whether two networks share an address.
    pub fn overlaps(self, other: Net) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// An address inside this network and outside `except` (another node's pods, say:
    /// the flannel network outside the node's own subnet): the first address after the
    /// network address of the first block of `except`'s size that `except` does not
    /// hold. None when there is none.
    pub fn address_outside(self, except: Net) -> Option<Net> {
        let net = self.network();
        let block = except.len.max(net.len);
        let step: u64 = 1u64 << (32 - u32::from(block));
        let mut start = u64::from(net.addr);
        let end = u64::from(net.addr) + (1u64 << (32 - u32::from(net.len)));
        while start < end {
            // The block's first host, or its only address for a /32.
            let a = if step > 1 { start + 1 } else { start };
            let cand = u32::try_from(a).ok()?;
            if !except.contains_addr(cand) {
                return Some(Net {
                    addr: cand,
                    len: 32,
                });
            }
            start += step;
        }
        None
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address(), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Net {
        Net::parse(s).expect("parses")
    }

    #[test]
    fn parses_what_ip_route_prints() {
        assert_eq!(n("10.244.0.0/16").to_string(), "10.244.0.0/16");
        assert_eq!(n("10.0.0.5").to_string(), "10.0.0.5/32");
        assert_eq!(n("default").to_string(), "0.0.0.0/0");
        for bad in ["fe80::/64", "10.0.0.0/33", "eth0", "10.0.0/8", ""] {
            assert_eq!(Net::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_network_contains_itself_and_longer_prefixes_only() {
        let flannel = n("10.244.0.0/16");
        assert!(flannel.contains(n("10.244.0.0/16")));
        assert!(flannel.contains(n("10.244.3.0/24")));
        assert!(flannel.contains(n("10.244.3.7")));
        // A wider route that holds the network does not shadow it: not inside.
        assert!(!flannel.contains(n("10.0.0.0/8")));
        assert!(!flannel.contains(n("172.16.0.0/12")));
        assert!(!flannel.contains(n("default")));
        assert!(n("10.0.0.0/8").overlaps(flannel));
        assert!(!n("172.16.0.0/12").overlaps(flannel));
    }

    #[test]
    fn network_and_an_address_of_another_nodes_pods() {
        assert_eq!(n("10.244.1.1/24").network().to_string(), "10.244.1.0/24");
        assert_eq!(n("192.168.2.17/24").network().to_string(), "192.168.2.0/24");
        let net = n("10.244.0.0/16");
        assert_eq!(
            net.address_outside(n("10.244.0.1/24"))
                .map(|a| a.to_string()),
            Some("10.244.1.1/32".into())
        );
        assert_eq!(
            net.address_outside(n("10.244.7.1/24"))
                .map(|a| a.to_string()),
            Some("10.244.0.1/32".into())
        );
        assert_eq!(n("10.244.1.0/24").address_outside(n("10.244.1.1/24")), None);
    }
}
