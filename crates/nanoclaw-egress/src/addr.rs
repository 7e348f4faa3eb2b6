//! Which resolved addresses the proxy refuses to connect to: loopback, private, link-local,
//! shared (CGNAT), multicast, broadcast, unspecified and cloud metadata, for IPv4 and IPv6,
//! with IPv4 addresses embedded in IPv6 (mapped, translated, compatible, NAT64, 6to4) judged as
//! the IPv4 they are, and the IPv6 tunnels that route by an address the proxy cannot see
//! (Teredo, local-use NAT64) refused outright.
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

/// Cloud metadata and host-agent endpoints, with who serves them: the one table of them.
/// Each hands out the machine's credentials or configuration to whoever asks from the
/// machine, so each is refused even where a rule allows private addresses (and one, Azure's
/// WireServer, sits in public address space).
pub const METADATA: &[(IpAddr, &str)] = &[
    (
        v4(169, 254, 169, 254),
        "AWS, GCP, Azure, Oracle, OpenStack, DigitalOcean, Hetzner, Linode, Vultr, IBM, Huawei",
    ),
    (v6(0xfd00, 0xec2, 0x254), "AWS instance metadata (IPv6)"),
    (v4(169, 254, 170, 2), "AWS ECS task credentials"),
    (v4(169, 254, 170, 23), "AWS EKS Pod Identity"),
    (v6(0xfd00, 0xec2, 0x23), "AWS EKS Pod Identity (IPv6)"),
    (v6(0xfd20, 0xce, 0x254), "GCP metadata (IPv6)"),
    (v4(168, 63, 129, 16), "Azure WireServer and host agent"),
    (v4(100, 100, 100, 200), "Alibaba Cloud"),
    (v4(169, 254, 0, 23), "Tencent Cloud"),
    (v4(169, 254, 42, 42), "Scaleway"),
    (v4(192, 0, 0, 192), "Oracle Cloud Classic"),
    (
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0xa9fe, 0xa9fe)),
        "OpenStack metadata (IPv6)",
    ),
];

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// `PREFIX:SECOND::LAST`, the shape of the IPv6 metadata addresses.
const fn v6(prefix: u16, second: u16, last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(prefix, second, 0, 0, 0, 0, 0, last))
}

/// Whether connecting to `to` would reach the listener at `listener`: the same port, and the
/// same address (an IPv4-mapped IPv6 one read as IPv4) or the unspecified one, which the
/// kernel takes for this host.
pub fn reaches_listener(to: std::net::SocketAddr, listener: std::net::SocketAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let ip = canonical(to.ip());
    to.port() == listener.port() && (ip.is_unspecified() || ip == canonical(listener.ip()))
}

/// Whether the address is a cloud metadata endpoint ([`METADATA`], also inside IPv6):
/// refused even where a rule allows private addresses.
pub fn is_metadata(ip: IpAddr) -> bool {
    METADATA.iter().any(|(m, _)| *m == ip)
        || match ip {
            IpAddr::V4(_) => false,
            IpAddr::V6(v6) => embedded_v4(v6).is_some_and(|v4| is_metadata(IpAddr::V4(v4))),
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

/// The IPv4 address carried inside an IPv6 one: mapped (::ffff:a.b.c.d), translated
/// (::ffff:0:a.b.c.d), compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) or 6to4
/// (2002:aabb:ccdd::/48).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0, hi, lo] if !(hi == 0 && lo <= 1) => Some(v4(hi, lo)),
        [0, 0, 0, 0, 0xffff, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
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
    } else if s[0] == 0x2001 && s[1] == 0 {
        // The tunnel sends to the IPv4 address in the last 32 bits, which may be private.
        Some("a Teredo address (2001::/32)")
    } else if s[..3] == [0x64, 0xff9b, 1] {
        // Translated by a local gateway, under a prefix whose layout only the network knows.
        Some("a local-use NAT64 address (64:ff9b:1::/48)")
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

    /// The refused IPv4 ranges, written out again as plain prefixes: the reference the
    /// address checks are compared with.
    const REFUSED_V4: [(u32, u32); 13] = [
        (0x0000_0000, 8),  // 0/8
        (0x0a00_0000, 8),  // 10/8
        (0xa83f_8110, 32), // 168.63.129.16
        (0x6440_0000, 10), // 100.64/10
        (0x6464_64c8, 32), // 100.100.100.200
        (0x7f00_0000, 8),  // 127/8
        (0xa9fe_0000, 16), // 169.254/16
        (0xac10_0000, 12), // 172.16/12
        (0xc000_0000, 24), // 192.0.0/24
        (0xc0a8_0000, 16), // 192.168/16
        (0xc612_0000, 15), // 198.18/15
        (0xe000_0000, 4),  // 224/4
        (0xf000_0000, 4),  // 240/4
    ];

    fn in_reference(v4: u32) -> bool {
        REFUSED_V4
            .iter()
            .any(|&(base, len)| (v4 ^ base) >> (32 - len) == 0)
    }

    /// Random addresses inside each refused range, at its edges and just outside them, and
    /// anywhere: refused exactly when the reference says so, as IPv4 and in every IPv6 form
    /// that carries an IPv4 address.
    #[test]
    fn random_addresses_agree_with_the_reference_in_every_form() {
        let mut rng = fastrand::Rng::with_seed(0xadd7);
        for _ in 0..200_000 {
            let (base, len) = REFUSED_V4[rng.usize(..REFUSED_V4.len())];
            let size = 1u64 << (32 - len);
            let v4 = match rng.u8(..4) {
                0 => rng.u32(..),
                1 => base.wrapping_sub(1),
                2 => (u64::from(base) + size).min(u64::from(u32::MAX)) as u32,
                _ => base | (rng.u32(..) & (size - 1) as u32),
            };
            let expected = in_reference(v4);
            let addr = Ipv4Addr::from(v4);
            assert_eq!(forbidden(addr.into()).is_some(), expected, "{addr}");
            let [a, b, c, d] = addr.octets();
            let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            let rest = rng.u16(..);
            for v6 in [
                addr.to_ipv6_mapped(),
                Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, hi, lo),
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, hi, lo),
                Ipv6Addr::new(0x2002, hi, lo, rest, 0, 0, 0, 1),
            ] {
                assert_eq!(forbidden(v6.into()).is_some(), expected, "{v6} ({addr})");
            }
            // Compatible form: ::0 and ::1 are the unspecified and loopback addresses.
            let compatible = Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo);
            assert_eq!(
                forbidden(compatible.into()).is_some(),
                expected || v4 <= 1,
                "{compatible}"
            );
        }
    }

    #[test]
    fn ipv6_tunnels_that_hide_their_destination_are_refused() {
        for a in [
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "2001::1",
            "64:ff9b:1::a00:1", // local-use NAT64
            "2002:7f00:1::1",   // 6to4 around 127.0.0.1
            "2002:a9fe:a9fe::", // 6to4 around the metadata address
            "::ffff:0:7f00:1",  // translated 127.0.0.1
        ] {
            assert!(refused(a), "{a} was allowed");
        }
        assert!(!refused("2002:101:101::1"), "6to4 around a public address");
        assert!(is_metadata("2002:a9fe:a9fe::".parse().unwrap()));
    }

    #[test]
    fn every_metadata_entry_is_refused_in_every_form_even_when_private() {
        for (ip, who) in METADATA {
            assert!(is_metadata(*ip), "{ip} ({who})");
            assert!(forbidden(*ip).is_some(), "{ip} ({who}) is not refused");
            if let IpAddr::V4(v4) = ip {
                for form in [v4.to_ipv6_mapped(), v4.to_ipv6_compatible()] {
                    assert!(is_metadata(IpAddr::V6(form)), "{form} ({who})");
                }
            }
            let host = match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            assert!(
                crate::policy::Rule::parse(&host, None, true).is_err(),
                "a private rule for {host} ({who}) was accepted"
            );
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
