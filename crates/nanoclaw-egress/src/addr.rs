//! Which resolved addresses the proxy refuses to connect to: loopback, private, link-local,
//! shared (CGNAT), multicast, broadcast, unspecified and cloud metadata, for IPv4 and IPv6,
//! with IPv4 addresses embedded in IPv6 (mapped, compatible, NAT64) judged as the IPv4 they are.
//!
//! Called on the address the proxy is about to connect to, after its own DNS resolution; the
//! connection then goes to exactly that address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused, or `None` when it is a public address.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// Whether the address is a cloud metadata endpoint: refused even where a rule allows private
/// addresses.
pub fn is_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4 == Ipv4Addr::new(169, 254, 169, 254) || v4 == Ipv4Addr::new(100, 100, 100, 200)
        }
        IpAddr::V6(v6) => {
            v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || embedded_v4(v6).is_some_and(|v4| is_metadata(IpAddr::V4(v4)))
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if is_metadata(IpAddr::V4(ip)) {
        Some("a cloud metadata address")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("an unspecified address (0.0.0.0/8)")
    } else if ip.is_loopback() {
        Some("a loopback address (127.0.0.0/8)")
    } else if ip.is_private() {
        Some("a private address (10/8, 172.16/12, 192.168/16)")
    } else if ip.is_link_local() {
        Some("a link-local address (169.254/16)")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("a shared (CGNAT) address (100.64/10)")
    } else if ip.is_multicast() {
        Some("a multicast address (224/4)")
    } else if o[0] >= 240 {
        Some("a reserved or broadcast address (240/4)")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("an IETF protocol address (192.0.0/24)")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("a benchmarking address (198.18/15)")
    } else {
        None
    }
}

/// The IPv4 address carried inside an IPv6 one: mapped (::ffff:a.b.c.d), compatible
/// (::a.b.c.d) or NAT64 (64:ff9b::a.b.c.d).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(tail);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    None
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    if is_metadata(IpAddr::V6(ip)) {
        Some("a cloud metadata address")
    } else if ip.is_unspecified() {
        Some("the unspecified address (::)")
    } else if ip.is_loopback() {
        Some("the loopback address (::1)")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("a unique local address (fc00::/7)")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("a link-local address (fe80::/10)")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Some("a site-local address (fec0::/10)")
    } else if ip.is_multicast() {
        Some("a multicast address (ff00::/8)")
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("a documentation address (2001:db8::/32)")
    } else if s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
        Some("a discard address (100::/64)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        forbidden(s.parse().unwrap()).is_some()
    }

    #[test]
    fn loopback_private_and_special_v4_are_refused() {
        for a in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "100.100.100.200",
        ] {
            assert!(refused(a), "{a} was allowed");
        }
    }

    #[test]
    fn public_v4_is_allowed() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "140.82.112.3",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.2.1",
            "203.0.113.5",
        ] {
            assert!(!refused(a), "{a} was refused");
        }
    }

    #[test]
    fn special_v6_and_embedded_v4_are_refused() {
        for a in [
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
            "2001:db8::1",
            "100::1",
        ] {
            assert!(refused(a), "{a} was allowed");
        }
    }

    #[test]
    fn public_v6_is_allowed() {
        for a in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert!(!refused(a), "{a} was refused");
        }
    }

    #[test]
    fn metadata_is_recognised_in_every_form() {
        for a in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "100.100.100.200",
        ] {
            assert!(is_metadata(a.parse().unwrap()), "{a}");
        }
        assert!(!is_metadata("10.0.0.1".parse().unwrap()));
    }
}
