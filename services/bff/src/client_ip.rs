//! Who is really calling: the socket peer, or — only when that peer is one of our own trusted
//! proxies — the client it names in `X-Forwarded-For`.
//!
//! Anyone can send `X-Forwarded-For`; believing it from an arbitrary peer would let a client pick
//! its own rate-limit bucket. So the header is read only behind a configured proxy, right to left,
//! skipping our own proxies, and the first address that is not one of ours is the client.

use std::net::IpAddr;

use http::HeaderMap;

/// The request headers the edge reads, wherever the request's head was parsed: hyper's
/// `HeaderMap`, or a head the proxy's fast path parsed (`proxy/front.rs`).
pub trait RequestHeaders {
    /// Every value of header `name` (given in lower case), in the order they came.
    fn values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]>;
}

impl RequestHeaders for HeaderMap {
    fn values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(http::HeaderValue::as_bytes)
    }
}

/// Why a trusted-proxy list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or CIDR block (e.g. 10.0.0.0/8, 127.0.0.1, ::1/128)")]
    Address(String),
    #[error("{0:?} has a prefix length longer than its address")]
    Prefix(String),
}

/// One CIDR block, e.g. `10.0.0.0/8`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address as given (host bits are masked when comparing).
    network: IpAddr,
    /// How many leading bits must match.
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, CidrError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::Address(text.to_owned()))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| CidrError::Address(text.to_owned()))?,
            None => max,
        };
        if prefix > max {
            return Err(CidrError::Prefix(text.to_owned()));
        }
        Ok(Self { network, prefix })
    }

    /// Whether `ip` is inside this block (an IPv4-mapped IPv6 address counts as its IPv4 self).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(net.to_bits(), ip.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    a & mask == b & mask
}

/// The proxies whose `X-Forwarded-For` we believe.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// A comma-separated list of CIDR blocks or addresses; empty trusts no one.
    pub fn parse(list: &str) -> Result<Self, CidrError> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// The client's address: `peer` itself unless `peer` is trusted and `X-Forwarded-For` names
    /// someone beyond our proxies.
    pub fn client_ip(&self, peer: IpAddr, headers: &(impl RequestHeaders + ?Sized)) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        // Every hop appends the address it received from, so the list reads client first, our
        // nearest proxy last; walking back from the end, the first untrusted hop is the client.
        // A hop that is not an address ends the walk: what lies left of it cannot be trusted,
        // so the nearest hop read so far stands.
        let hops = headers
            .values("x-forwarded-for")
            .map(|v| std::str::from_utf8(v).unwrap_or(""))
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            value.parse().unwrap_or_else(|e| panic!("{value}: {e}")),
        );
        headers
    }

    #[test]
    fn a_block_contains_its_addresses_and_not_its_neighbours() {
        let block = Cidr::parse("10.1.0.0/16").unwrap_or_else(|e| panic!("{e}"));
        assert!(block.contains(ip("10.1.255.3")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(block.contains(ip("::ffff:10.1.0.9")));
        let v6 = Cidr::parse("fd00::/8").unwrap_or_else(|e| panic!("{e}"));
        assert!(v6.contains(ip("fd12::1")));
        assert!(!v6.contains(ip("10.1.0.1")));
    }

    #[test]
    fn bad_blocks_are_errors_naming_them() {
        assert!(matches!(
            Cidr::parse("10.0.0.0/33"),
            Err(CidrError::Prefix(_))
        ));
        assert!(matches!(Cidr::parse("nope"), Err(CidrError::Address(_))));
        assert!(TrustedProxies::parse(" , ").is_ok_and(|t| !t.trusts(ip("127.0.0.1"))));
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap_or_default();
        let client = trusted.client_ip(ip("192.0.2.1"), &xff("203.0.113.9"));
        assert_eq!(client, ip("192.0.2.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1").unwrap_or_default();
        let headers = xff("198.51.100.1, 203.0.113.9, 10.0.0.5");
        assert_eq!(
            trusted.client_ip(ip("127.0.0.1"), &headers),
            ip("203.0.113.9")
        );
        assert_eq!(
            trusted.client_ip(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        assert_eq!(
            trusted.client_ip(ip("10.0.0.7"), &xff("garbage")),
            ip("10.0.0.7")
        );
        assert_eq!(
            trusted.client_ip(ip("10.0.0.7"), &xff("10.9.9.9, 10.8.8.8")),
            ip("10.9.9.9"),
            "all hops ours: the farthest is the client"
        );
    }

    #[test]
    fn a_client_cannot_hide_behind_garbage_it_wrote_itself() {
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap_or_default();
        // The client sent "6.6.6.6, junk"; our proxy appended the address it saw.
        let headers = xff("6.6.6.6, junk, 198.51.100.4");

        assert_eq!(
            trusted.client_ip(ip("10.0.0.1"), &headers),
            ip("198.51.100.4")
        );
        assert_eq!(
            trusted.client_ip(ip("10.0.0.1"), &xff("6.6.6.6, junk, 10.0.0.2")),
            ip("10.0.0.2")
        );
    }
}
