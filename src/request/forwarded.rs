//! Who the client is: the peer address, unless the peer is a configured trusted proxy, in which case
//! its `X-Forwarded-For` chain is believed, read from the right and up to the first untrusted hop.
//!
//! Threat: anyone can send `X-Forwarded-For: 1.2.3.4`. Believing it from an untrusted peer lets a
//! client pick its own rate-limit bucket (and its own log identity). So the chain is only read when
//! the peer is trusted, and even then only the hops appended by trusted proxies are skipped: the
//! right-most untrusted address is the client, never the left-most (which the client wrote).

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderValue};

pub use crate::core::ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// The client as the gateway decided it, and the `X-Forwarded-For` value to send on.
pub(crate) struct ClientAddress {
    pub ip: IpAddr,
    pub forwarded_for: HeaderValue,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies { nets }
    }

    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }

    /// Decides the client address. `peer_value` is the peer IP as a header value, computed once per
    /// connection; for an untrusted peer (the common case) nothing is allocated.
    pub(crate) fn client(
        &self,
        peer: IpAddr,
        peer_value: &HeaderValue,
        headers: &HeaderMap,
    ) -> ClientAddress {
        let untrusted = ClientAddress {
            ip: peer,
            forwarded_for: peer_value.clone(),
        };
        if self.nets.is_empty() || !self.is_trusted(peer) {
            return untrusted;
        }
        // A trusted proxy: keep and extend its chain. Several headers form one list (RFC 9110 5.3).
        let mut chain: Vec<&str> = Vec::new();
        for value in headers.get_all("x-forwarded-for") {
            let Ok(text) = value.to_str() else {
                return untrusted;
            };
            chain.extend(text.split(',').map(str::trim).filter(|hop| !hop.is_empty()));
        }
        let mut client = peer;
        for hop in chain.iter().rev() {
            let Ok(ip) = hop.parse::<IpAddr>() else {
                // Garbage in the chain: stop believing it at this point.
                break;
            };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        let mut extended = chain.join(", ");
        if !extended.is_empty() {
            extended.push_str(", ");
        }
        extended.push_str(&peer.to_string());
        ClientAddress {
            ip: client,
            forwarded_for: HeaderValue::from_str(&extended).unwrap_or_else(|_| peer_value.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn cidr_matching() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        let host: IpNet = "::1".parse().unwrap();
        assert!(host.contains("::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "::1/129", "10.0.0.0/-1"] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn untrusted_peer_chain_is_replaced() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        let value = HeaderValue::from_static("203.0.113.9");
        let client = proxies.client(peer, &value, &headers(&["1.2.3.4"]));
        assert_eq!(client.ip, peer);
        assert_eq!(client.forwarded_for, "203.0.113.9");
    }

    #[test]
    fn trusted_peer_chain_is_read_from_the_right() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let value = HeaderValue::from_static("10.0.0.2");
        // The client forged 6.6.6.6; the real client 198.51.100.7 was appended by our proxy 10.0.0.5.
        let client = proxies.client(
            peer,
            &value,
            &headers(&["6.6.6.6, 198.51.100.7", "10.0.0.5"]),
        );
        assert_eq!(client.ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            client.forwarded_for,
            "6.6.6.6, 198.51.100.7, 10.0.0.5, 10.0.0.2"
        );
        let garbage = proxies.client(peer, &value, &headers(&["1.1.1.1, nonsense"]));
        assert_eq!(garbage.ip, peer);
    }
}
