//! The client's address: the TCP peer, or — when the peer is a trusted proxy (config
//! `trusted_proxies`) — the address that proxy put in `X-Forwarded-For`. Used wherever a
//! client is told apart by address: failed-login throttling and the access log. Without
//! trusted proxies the header is ignored, so a client cannot pick its own address.

use std::net::IpAddr;
use std::sync::OnceLock;

use actix_web::HttpRequest;
use ipnet::IpNet;

static TRUSTED: OnceLock<Vec<IpNet>> = OnceLock::new();

/// Parses `trusted_proxies` (addresses or CIDR ranges) once at start-up; later calls keep the
/// first list (one process serves one configuration).
pub fn init(trusted: &[String]) -> anyhow::Result<()> {
    let nets = parse(trusted)?;
    let _ = TRUSTED.set(nets);
    Ok(())
}

fn parse(trusted: &[String]) -> anyhow::Result<Vec<IpNet>> {
    trusted
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| anyhow::anyhow!("trusted_proxies: {s:?} is not an IP address or CIDR range"))
        })
        .collect()
}

/// The client address of `req` as text (empty if unknown).
pub fn client_ip(req: &HttpRequest) -> String {
    let peer = req.peer_addr().map(|a| a.ip());
    let forwarded = req.headers().get_all("x-forwarded-for").filter_map(|v| v.to_str().ok());
    resolve(peer, forwarded, TRUSTED.get().map(Vec::as_slice).unwrap_or(&[]))
        .map(|ip| ip.to_string())
        .unwrap_or_default()
}

/// The rightmost address not belonging to a trusted proxy, walking `X-Forwarded-For` from the
/// peer backwards (each proxy appends the address it saw); the peer itself if it is not trusted.
fn resolve<'a>(peer: Option<IpAddr>, forwarded: impl Iterator<Item = &'a str>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = forwarded.flat_map(|v| v.split(',')).map(str::trim).filter(|s| !s.is_empty()).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A hop we cannot read: stop at the last address we could vouch for.
            Err(_) => break,
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn header_ignored_unless_the_peer_is_trusted() {
        let trusted = parse(&["10.0.0.0/8".into(), "192.168.1.5".into()]).unwrap();
        let xff = ["1.2.3.4"];
        assert_eq!(resolve(Some(ip("8.8.8.8")), xff.into_iter(), &trusted), Some(ip("8.8.8.8")));
        assert_eq!(resolve(Some(ip("8.8.8.8")), xff.into_iter(), &[]), Some(ip("8.8.8.8")));
        assert_eq!(resolve(Some(ip("10.1.2.3")), xff.into_iter(), &trusted), Some(ip("1.2.3.4")));
    }

    #[test]
    fn rightmost_untrusted_hop_wins_and_spoofed_prefixes_do_not() {
        let trusted = parse(&["10.0.0.0/8".into(), "192.168.1.5".into()]).unwrap();
        // The client sent "6.6.6.6" itself; the edge proxy appended the real address 1.2.3.4,
        // an inner proxy appended the edge's 192.168.1.5.
        let xff = ["6.6.6.6, 1.2.3.4", "192.168.1.5"];
        assert_eq!(resolve(Some(ip("10.0.0.1")), xff.into_iter(), &trusted), Some(ip("1.2.3.4")));
        // Unreadable hop: the last address vouched for.
        assert_eq!(resolve(Some(ip("10.0.0.1")), ["junk, 192.168.1.5"].into_iter(), &trusted), Some(ip("192.168.1.5")));
        // Only trusted hops: the leftmost.
        assert_eq!(resolve(Some(ip("10.0.0.1")), ["10.9.9.9"].into_iter(), &trusted), Some(ip("10.9.9.9")));
        assert!(parse(&["not-an-ip".into()]).is_err());
    }
}
