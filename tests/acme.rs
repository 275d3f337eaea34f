//! Automatic certificates over ACME against a real ACME server: Debian's `pebble` (Let's
//! Encrypt's test CA) with `pebble-challtestsrv` resolving the test domains to 127.0.0.1
//! (`common::pebble`). A certificate is obtained through TLS-ALPN-01 (on Berth's HTTPS port)
//! and through HTTP-01 (on `tls.http_listen`), served, verified by a client that trusts only
//! pebble's root; `berth tls renew` gives a new one to new connections while open ones keep
//! theirs; an unreachable ACME server leaves the old certificate serving and is retried with
//! growing waits; a restart serves the stored certificate without a new order; two nodes on
//! one PostgreSQL database order once (the node that did not order answers the CA's
//! validation, HTTP-01 and TLS-ALPN-01) and serve the same certificate.

mod common;

use std::time::{Duration, Instant};

use common::pebble::Pebble;
use common::{Backend, Berth, free_port};

/// How long a test waits for a certificate to be issued and served.
const ISSUE_WAIT: Duration = Duration::from_secs(30);

/// The ACME client's log at info level (the harness's default is warnings only).
const LOG: (&str, &str) = ("BERTH_LOG", "warn,berth::acme=info");

/// The log line of each order.
const ORDERING: &str = "ordering an ACME certificate";

/// A Berth configuration with `[tls.acme]` for `domains` from `pebble`, checking every second
/// and retrying after 1, 2, 4, 4… seconds.
fn acme_toml(pebble: &Pebble, domains: &[&str], challenge: &str, http_listen: Option<u16>) -> String {
    let domains: Vec<String> = domains.iter().map(|d| format!("{d:?}")).collect();
    let http = http_listen.map(|p| format!("http_listen = \"127.0.0.1:{p}\"\n")).unwrap_or_default();
    format!(
        "[auth]\nenabled = false\n\n[tls]\n{http}\n[tls.acme]\ndomains = [{}]\ncontact = [\"mailto:ops@example.com\"]\n\
         directory = {:?}\nca_file = {:?}\nchallenge = {challenge:?}\ncheck_interval_secs = 1\n\
         retry_initial_secs = 1\nretry_max_secs = 4\n",
        domains.join(", "),
        pebble.directory,
        pebble.ca_file().display().to_string(),
    )
}

/// What a new connection to `domain` on 127.0.0.1:`port` was served, checked by a client that
/// trusts only `root` (pebble's) and names the server by `domain` (SNI and verification).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Served {
    serial: String,
    http2: bool,
}

fn client(root: &str, domain: &str, port: u16) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root.as_bytes()).unwrap()])
        .resolve(domain, ([127, 0, 0, 1], port).into())
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(120))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn serial_of(resp: &reqwest::Response) -> Result<String, String> {
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().ok_or("no TLS info")?;
    let der = info.peer_certificate().ok_or("no peer certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(cert.raw_serial_as_string().replace(':', "").to_uppercase())
}

/// A request on `client` to `/v2/` (the registry answers 200: auth is off).
async fn get_v2(client: &reqwest::Client, domain: &str, port: u16) -> Result<Served, String> {
    let resp = client.get(format!("https://{domain}:{port}/v2/")).send().await.map_err(|e| format!("{e:?}"))?;
    if resp.status() != 200 {
        return Err(format!("GET /v2/: {}", resp.status()));
    }
    Ok(Served { serial: serial_of(&resp)?, http2: resp.version() == reqwest::Version::HTTP_2 })
}

/// A fresh connection (a new client).
async fn served(root: &str, domain: &str, port: u16) -> Result<Served, String> {
    get_v2(&client(root, domain, port), domain, port).await
}

/// Waits until a new connection gets a certificate that verifies under `root` and whose serial
/// is not `old`.
async fn wait_served(root: &str, domain: &str, berth: &Berth, old: Option<&str>) -> Served {
    let deadline = Instant::now() + ISSUE_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match served(root, domain, berth.port).await {
            Ok(s) if Some(s.serial.as_str()) != old => return s,
            Ok(s) => last = format!("still the old certificate {}", s.serial),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no (new) certificate from pebble served for {domain} within {ISSUE_WAIT:?}: {last}\n{}", berth.log());
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// pebble, and Berth on a port chosen first (pebble sends TLS-ALPN-01 validations there).
async fn start_tls_alpn(domain: &str) -> (Pebble, Berth, String) {
    let port = free_port();
    let pebble = Pebble::start(free_port(), port);
    let toml = acme_toml(&pebble, &[domain], "tls-alpn-01", None);
    let berth = Berth::start_https_at(Backend::FsSqlite, port, &toml, &[LOG], domain);
    let root = pebble.root_pem().await;
    (pebble, berth, root)
}

#[tokio::test]
async fn tls_alpn_01_certificate_is_obtained_stored_sealed_and_served() {
    let domain = "alpn.berth.test";
    let (_pebble, berth, root) = start_tls_alpn(domain).await;
    let first = wait_served(&root, domain, &berth, None).await;
    // ALPN still gives normal clients HTTP/2 beside acme-tls/1.
    assert!(first.http2, "HTTP/2 was not negotiated: {first:?}");
    let log = berth.log();
    assert!(
        log.contains("SELF-SIGNED PLACEHOLDER"),
        "the placeholder is announced before the first certificate:\n{log}"
    );
    assert_eq!(count(&log, ORDERING), 1, "{log}");
    // A client that does not trust pebble's root is refused.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only(
            [reqwest::Certificate::from_pem(common::tls::TestCa::new("other").ca_pem().as_bytes()).unwrap()],
        )
        .resolve(domain, ([127, 0, 0, 1], berth.port).into())
        .build()
        .unwrap();
    assert!(untrusting.get(format!("https://{domain}:{}/v2/", berth.port)).send().await.is_err());

    // The key is sealed in the database with the key file of the data dir (mode 0600).
    let mut db = common::db::connect(&berth).await;
    let (key_sealed, chain): (String, String) =
        sqlx::query_as("SELECT key_sealed, chain_pem FROM acme_certificates").fetch_one(&mut db).await.unwrap();
    assert!(key_sealed.starts_with("v1.") && !key_sealed.contains("PRIVATE KEY"), "{key_sealed}");
    assert!(chain.contains("BEGIN CERTIFICATE"));
    let (account,): (String,) =
        sqlx::query_as("SELECT credentials FROM acme_accounts").fetch_one(&mut db).await.unwrap();
    assert!(account.starts_with("v1.") && !account.contains("key_pkcs8"), "{account}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(berth.data_path().join("secret.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!log.contains(&std::fs::read_to_string(berth.data_path().join("secret.key")).unwrap().trim().to_string()));
}

#[tokio::test]
async fn http_01_certificate_is_obtained_and_the_plain_listener_redirects_or_refuses() {
    let domain = "http.berth.test";
    let (port, http_port) = (free_port(), free_port());
    let pebble = Pebble::start(http_port, free_port());
    let toml = acme_toml(&pebble, &[domain], "http-01", Some(http_port));
    let berth = Berth::start_https_at(Backend::FsSqlite, port, &toml, &[LOG], domain);
    let root = pebble.root_pem().await;
    wait_served(&root, domain, &berth, None).await;
    assert!(berth.log().contains("answered an ACME HTTP-01 challenge"), "{}", berth.log());

    let plain = reqwest::Client::builder()
        .resolve(domain, ([127, 0, 0, 1], http_port).into())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // A browser is sent to the same host and path on the HTTPS port.
    let r = plain.get(format!("http://{domain}:{http_port}/some/page?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("https://{domain}:{port}/some/page?x=1").as_str());
    // A registry client is told to use HTTPS, not redirected.
    let r = plain.get(format!("http://{domain}:{http_port}/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(&format!("https://{domain}:{port}")), "{message}");
    // No challenge pending: an unknown token is 404.
    let r = plain.get(format!("http://{domain}:{http_port}/.well-known/acme-challenge/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // And the redirect target works with pebble's root.
    let follow = client(&root, domain, port);
    assert_eq!(follow.get(format!("https://{domain}:{port}/v2/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn forced_renewal_serves_a_new_certificate_to_new_connections_and_keeps_open_ones() {
    let domain = "renew.berth.test";
    let (_pebble, berth, root) = start_tls_alpn(domain).await;
    let first = wait_served(&root, domain, &berth, None).await;
    // A connection opened on the first certificate, kept alive.
    let open = client(&root, domain, berth.port);
    assert_eq!(get_v2(&open, domain, berth.port).await.unwrap().serial, first.serial);

    let out = berth.cli(&["tls", "renew"]);
    assert!(out.contains(domain) && out.contains("renewal requested"), "{out}");
    let second = wait_served(&root, domain, &berth, Some(&first.serial)).await;
    assert_ne!(second.serial, first.serial);
    // The open connection still answers, on the certificate it started with.
    assert_eq!(get_v2(&open, domain, berth.port).await.unwrap().serial, first.serial, "the open connection changed");
    let log = berth.log();
    assert_eq!(count(&log, ORDERING), 2, "{log}");
    assert!(log.contains("renewal requested (berth tls renew)"), "{log}");
    // Renewed once: the request is cleared, no further order follows. SIGHUP (which reloads
    // certificate files) only checks here; the process lives on.
    let pid = berth.pid().to_string();
    common::run(std::process::Command::new("kill").args(["-HUP", &pid]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(berth.log().contains("SIGHUP: checking the stored ACME certificate now"), "{}", berth.log());
    assert_eq!(served(&root, domain, berth.port).await.unwrap().serial, second.serial);
    assert_eq!(count(&berth.log(), ORDERING), 2, "{}", berth.log());
}

#[tokio::test]
async fn an_unreachable_acme_server_is_retried_with_backoff_while_the_old_certificate_serves() {
    let domain = "down.berth.test";
    let (mut pebble, berth, root) = start_tls_alpn(domain).await;
    let first = wait_served(&root, domain, &berth, None).await;
    pebble.stop();
    berth.cli(&["tls", "renew"]);
    // Retries after 1, 2 and 4 seconds (retry_initial_secs = 1, retry_max_secs = 4).
    let deadline = Instant::now() + Duration::from_secs(25);
    let failed = |log: &str| count(log, "ACME certificate order failed");
    while failed(&berth.log()) < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = berth.log();
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("ACME certificate order failed")).collect();
    assert!(failures.len() >= 4, "not retried:\n{log}");
    for (i, wait) in [1, 2, 4, 4].iter().enumerate() {
        let line = failures[i];
        assert!(
            line.contains(&format!("attempt={}", i + 1)) && line.contains(&format!("retry_in_secs={wait}")),
            "{line}"
        );
        assert!(line.contains(domain) && line.contains("not_after=") && line.contains("error="), "{line}");
    }
    // The old certificate keeps serving, to new connections too.
    assert_eq!(served(&root, domain, berth.port).await.unwrap().serial, first.serial);
}

#[tokio::test]
async fn a_restart_serves_the_stored_certificate_without_a_new_order() {
    let domain = "restart.berth.test";
    let (pebble, mut berth, root) = start_tls_alpn(domain).await;
    let first = wait_served(&root, domain, &berth, None).await;
    let orders_before = count(&pebble.log(), "POST /order-plz");
    assert_eq!(count(&berth.log(), ORDERING), 1);
    berth.restart();
    // The first connection after the restart already gets the stored certificate.
    assert_eq!(served(&root, domain, berth.port).await.unwrap(), first);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&berth.log(), ORDERING), 1, "ordered again after the restart:\n{}", berth.log());
    assert_eq!(count(&pebble.log(), "POST /order-plz"), orders_before, "{}", pebble.log());
}

/// Two nodes on one PostgreSQL database: node A is where pebble sends validations, but node B
/// orders (A's first attempt found the CA down and waits a minute before the next), so B's
/// challenges are answered by A from the database. Both then serve the one certificate.
async fn two_nodes_order_once(challenge: &str, domain: &str) {
    let (port_a, port_b, http_a, http_b) = (free_port(), free_port(), free_port(), free_port());
    let mut pebble = Pebble::start(http_a, port_a);
    pebble.stop();
    let http01 = challenge == "http-01";
    let toml_a = acme_toml(&pebble, &[domain], challenge, http01.then_some(http_a))
        .replace("retry_initial_secs = 1", "retry_initial_secs = 60")
        .replace("retry_max_secs = 4", "retry_max_secs = 60");
    let toml_b = acme_toml(&pebble, &[domain], challenge, http01.then_some(http_b));
    let key = data_encoding::BASE64.encode(&[42u8; 32]);
    let env = [("BERTH_SECRET_KEY", key.as_str()), LOG];
    let a = Berth::start_https_at(Backend::s3_postgres(None), port_a, &toml_a, &env, domain);
    let deadline = Instant::now() + ISSUE_WAIT;
    while count(&a.log(), "ACME certificate order failed") == 0 {
        assert!(Instant::now() < deadline, "node A did not try to order:\n{}", a.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pebble.resume();
    let b = a.start_https_peer(port_b, &toml_b, &env);
    let root = pebble.root_pem().await;
    let on_b = wait_served(&root, domain, &b, None).await;
    let on_a = wait_served(&root, domain, &a, None).await;
    assert_eq!(on_a.serial, on_b.serial, "the nodes serve different certificates");
    assert_eq!(count(&a.log(), "obtained and serving a new ACME certificate"), 0, "{}", a.log());
    assert_eq!(count(&b.log(), "obtained and serving a new ACME certificate"), 1, "{}", b.log());
    assert_eq!(count(&b.log(), ORDERING), 1, "{}", b.log());
    assert_eq!(count(&pebble.log(), "POST /order-plz"), 1, "{}", pebble.log());
    if http01 {
        assert!(a.log().contains("answered an ACME HTTP-01 challenge"), "node A answered no challenge:\n{}", a.log());
        assert!(!b.log().contains("answered an ACME HTTP-01 challenge"), "{}", b.log());
    }
}

#[tokio::test]
async fn two_nodes_on_postgresql_order_once_and_answer_each_others_tls_alpn_01_challenges() {
    two_nodes_order_once("tls-alpn-01", "cluster-alpn.berth.test").await;
}

#[tokio::test]
async fn two_nodes_on_postgresql_order_once_and_answer_each_others_http_01_challenges() {
    two_nodes_order_once("http-01", "cluster-http.berth.test").await;
}
