//! The client's address: the TCP peer, or — when the peer is a trusted proxy (config
//! `trusted_proxies`) — the address that proxy put in `X-Forwarded-For`. Used wherever a
//! client is told apart by address: failed-login throttling and the access log. Without
//! trusted proxies the header is ignored, so a client cannot pick its own address.
//!
//! The same rule holds for the scheme and host a request claims through a proxy
//! (`X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded`), which decide the URLs Berth builds
//! (token realm, `Location`, the UI's links and `Secure` cookies): the outermost middleware
//! [`drop_untrusted_forwarding`] removes them from requests whose peer is not a trusted proxy.

use std::net::IpAddr;
use std::sync::OnceLock;

use actix_web::HttpRequest;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
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

/// The headers through which a proxy tells the original scheme, host and client.
const FORWARDING_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-proto", "x-forwarded-host"];

/// Middleware (`actix_web::middleware::from_fn`): removes `Forwarded`, `X-Forwarded-Proto`
/// and `X-Forwarded-Host` unless the TCP peer is a trusted proxy, so nobody else picks the
/// scheme or host of the URLs built for them.
pub async fn drop_untrusted_forwarding(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let trusted = TRUSTED.get().map(Vec::as_slice).unwrap_or(&[]);
    let peer = req.peer_addr().map(|a| a.ip());
    if !peer.is_some_and(|ip| trusted.iter().any(|n| n.contains(&ip))) {
        let headers = req.headers_mut();
        for name in FORWARDING_HEADERS {
            headers.remove(name);
        }
    }
    next.call(req).await
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

    /// The scheme and host of `X-Forwarded-Proto`/`-Host`/`Forwarded` count from a trusted
    /// proxy only (the list is the process's first `init`: 10.0.0.0/8 here).
    #[actix_web::test]
    async fn forwarded_scheme_and_host_count_only_from_trusted_proxies() {
        use actix_web::{App, HttpResponse, middleware::from_fn, test, web};
        init(&["10.0.0.0/8".into()]).unwrap();
        let app = test::init_service(App::new().wrap(from_fn(drop_untrusted_forwarding)).default_service(web::to(
            |req: HttpRequest| async move {
                let info = req.connection_info();
                HttpResponse::Ok().body(format!("{}://{}", info.scheme(), info.host()))
            },
        )))
        .await;
        let ask = |peer: &str, headers: &[(&str, &str)]| {
            let mut r = test::TestRequest::get()
                .uri("/")
                .peer_addr(peer.parse().unwrap())
                .insert_header(("host", "berth:5000"));
            for h in headers {
                r = r.insert_header(*h);
            }
            r.to_request()
        };
        let proto = [("x-forwarded-proto", "https"), ("x-forwarded-host", "evil.example")];
        let forwarded = [("forwarded", "proto=https;host=evil.example")];
        for headers in [&proto[..], &forwarded[..]] {
            let body = test::call_and_read_body(&app, ask("8.8.8.8:1234", headers)).await;
            assert_eq!(body, "http://berth:5000", "{headers:?} from anyone");
            let body = test::call_and_read_body(&app, ask("10.1.2.3:1234", headers)).await;
            assert_eq!(body, "https://evil.example", "{headers:?} from a trusted proxy");
        }
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
