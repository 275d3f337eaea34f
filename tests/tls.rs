//! HTTPS end to end: certificates from a CA made in the test (`common::tls::TestCa`), served by
//! `berth serve` from the files of `[tls]`; curl, skopeo, podman and the docker engine with
//! verification on; the reload of renewed files (on change and SIGHUP) during a 512 MiB
//! download; client certificates (mutual TLS) as logins; the mirror trusting a private
//! upstream's CA.
//!
//! Needs curl, skopeo, podman, unshare and a running docker engine (`scripts/prereqs test`). The
//! docker test adds a name for `::1` to `/etc/hosts` and a `ca.crt` under `/etc/docker/certs.d/`,
//! and removes both when it ends, also on failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::containers::Containers;
use common::registry::{Creds, Reg, header};
use common::skopeo::{Layout, Skopeo};
use common::tls::{Issued, TestCa, replace_file, served_serial};
use common::{ADMIN_PASSWORD, Berth, eventually, output_text, require, sha256};
use reqwest::{Method, StatusCode};

/// A `[tls]` section for the files `cert` and `key`, then `extra` lines of it.
fn tls_toml(cert: &Path, key: &Path, extra: &str) -> String {
    format!("[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{extra}\n", cert.display(), key.display())
}

/// An HTTPS server on 127.0.0.1 with a certificate of `ca` for `127.0.0.1` and `localhost`,
/// authentication on (the admin's password is [`ADMIN_PASSWORD`]); the certificate's files
/// live in the returned directory.
fn start_https(ca: &TestCa, extra_tls: &str, env: &[(&str, &str)]) -> (Berth, Issued, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let issued = ca.server(&["127.0.0.1", "localhost"]);
    let (cert, key) = issued.write(files.path(), "server");
    let mut env = env.to_vec();
    env.push(("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD));
    let b = Berth::start_https(&tls_toml(&cert, &key, extra_tls), &env, "127.0.0.1", "127.0.0.1");
    (b, issued, files)
}

/// `curl ARGS` (silent, errors shown) whatever its exit status.
fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl").args(["-sS", "--max-time", "30"]).args(args).output().expect("run curl")
}

// ---- serving ---------------------------------------------------------------------------------

/// curl with the test CA gets HTTP/2 (and HTTP/1.1 when it asks for it); the challenge's realm
/// and the UI's cookies say HTTPS; without the CA the certificate is refused; RSA, ECDSA P-384
/// and Ed25519 keys serve as well as P-256.
#[tokio::test]
async fn https_with_h2_and_verification() {
    require("curl", &["--version"], "apt-get install curl");
    let ca = TestCa::new("Berth test CA");
    let (b, issued, _files) = start_https(&ca, "", &[]);
    let ca_file = ca.ca_file();
    let ca_arg = ca_file.to_str().unwrap();
    let url = format!("{}/v2/", b.base);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = curl(&["--cacert", ca_arg, flag, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", &url]);
        assert!(out.status.success(), "curl {flag}: {}", output_text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{version} 401"), "curl {flag}");
    }
    // Without the test CA (only the system's): refused, curl's "peer certificate cannot be
    // authenticated" (60).
    let out = curl(&["--cacert", "/etc/ssl/certs/ca-certificates.crt", "-o", "/dev/null", &url]);
    assert_eq!(out.status.code(), Some(60), "curl without the CA: {}", output_text(&out));
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = format!("http://127.0.0.1:{}/v2/", b.port);
    let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", &plain]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stdout) == "000", "{}", output_text(&out));

    // What a client sees: the certificate issued, the challenge names the HTTPS token endpoint.
    assert_eq!(served_serial(&ca, &url).await.unwrap(), issued.serial);
    let reg = Reg::new(&b).with_http(ca.http());
    let r = reg.send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let challenge = header(&r, "www-authenticate");
    assert!(challenge.contains(&format!("realm=\"https://127.0.0.1:{}/token\"", b.port)), "{challenge}");
    // A push and pull over HTTPS with a token from the HTTPS token endpoint.
    let admin = reg.with(&Creds::admin());
    let hook = admin
        .api_ok(
            Method::POST,
            "/api/v1/webhooks",
            Some(serde_json::json!({"url": "http://127.0.0.1:9/hook", "events": ["push"]})),
        )
        .await;
    let image = common::images::tiny("admin/app");
    let digest = admin.push_image("admin/app", "v1", &image).await;
    let token = admin.token(&["repository:admin/app:pull"]).await;
    let r = reg.with(&Creds::bearer(&token)).get_manifest("admin/app", "v1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    // The webhook's link to the pushed manifest is an HTTPS one.
    let history = admin.api_ok(Method::GET, &format!("/api/v1/webhooks/{}/deliveries", hook["id"]), None).await;
    let payload = &history["deliveries"][0]["payload"];
    assert_eq!(payload["url"], format!("https://127.0.0.1:{}/v2/admin/app/manifests/{digest}", b.port), "{history}");
    // The upload's Location stays on the same origin (relative), so it is HTTPS too.
    let r = admin.send(Method::POST, "/v2/admin/app/blobs/uploads/").await;
    let location = header(&r, "location");
    assert!(location.starts_with("/v2/admin/app/blobs/uploads/"), "{location}");
    // The web UI's cookies are Secure over HTTPS.
    let r = reg.send(Method::GET, "/login").await;
    let cookies: Vec<String> =
        r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert!(!cookies.is_empty(), "the login page sets its CSRF cookie");
    assert!(cookies.iter().all(|c| c.contains("; Secure")), "{cookies:?}");
    drop(b);

    for (alg, what) in [
        (&rcgen::PKCS_RSA_SHA256, "RSA"),
        (&rcgen::PKCS_ECDSA_P384_SHA384, "ECDSA P-384"),
        (&rcgen::PKCS_ED25519, "Ed25519"),
    ] {
        let files = tempfile::tempdir().unwrap();
        let issued = ca.server_with(&["127.0.0.1"], alg);
        let (cert, key) = issued.write(files.path(), "server");
        let b = Berth::start_https(
            &tls_toml(&cert, &key, ""),
            &[("BERTH_AUTH__ENABLED", "false")],
            "127.0.0.1",
            "127.0.0.1",
        );
        let out = curl(&["--cacert", ca_arg, "-o", "/dev/null", "-w", "%{http_code}", &format!("{}/v2/", b.base)]);
        assert!(out.status.success(), "{what} key: {}", output_text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{what} key");
        assert_eq!(served_serial(&ca, &format!("{}/v2/", b.base)).await.unwrap(), issued.serial, "{what} key");
    }
}

/// A server whose certificate file is bad does not start, and says why; so does one with
/// `[tls]` settings but no certificate.
#[test]
fn a_bad_certificate_stops_the_start() {
    let ca = TestCa::new("Berth test CA");
    let files = tempfile::tempdir().unwrap();
    let good = ca.server(&["127.0.0.1"]);
    let other = ca.server(&["127.0.0.1"]);
    let cert = files.path().join("server.crt");
    let key = files.path().join("server.key");
    std::fs::write(&cert, &good.cert_pem).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    let no_cert = format!("[tls]\nkey_file = \"{}\"\n", key.display());
    for (toml, says) in
        [(tls_toml(&cert, &key, ""), "does not belong to the certificate"), (no_cert, "tls.cert_file is not")]
    {
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("berth.toml");
        std::fs::write(&config, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("BERTH_CONFIG", &config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{says}");
        assert!(output_text(&out).contains(says), "{}", output_text(&out));
    }
}

// ---- clients -----------------------------------------------------------------------------------

/// skopeo and podman push and pull with `--tls-verify=true` and the test CA in their
/// certificate directory, and refuse the server without it.
#[tokio::test]
async fn skopeo_and_podman_verify_and_push_and_pull() {
    let ca = TestCa::new("Berth test CA");
    let (b, _issued, _files) = start_https(&ca, "", &[("BERTH_LOG", "warn,berth::access=info")]);
    let skopeo = Skopeo::new();
    let certs = ca.cert_dir(None);
    let certs = certs.path().to_str().unwrap();
    let creds = format!("admin:{ADMIN_PASSWORD}");

    let src = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(src.path().to_path_buf());
    let desc = layout.image("amd64", "over https", true);
    layout.tag("v1", &desc);
    let dest = format!("docker://{}/admin/skopeo:v1", b.host());
    let copy = |extra: &[&str], from: &str, to: &str| {
        let mut args = vec!["copy", "--quiet", "--preserve-digests"];
        args.extend(extra);
        args.extend([from, to]);
        skopeo.output(&args)
    };
    // No CA: the certificate is refused.
    let out = copy(&["--dest-tls-verify=true", "--dest-creds", &creds], &layout.transport("v1"), &dest);
    assert!(!out.status.success(), "skopeo without the CA must fail");
    assert!(output_text(&out).contains("certificate"), "{}", output_text(&out));
    let out = copy(
        &["--dest-tls-verify=true", "--dest-cert-dir", certs, "--dest-creds", &creds],
        &layout.transport("v1"),
        &dest,
    );
    assert!(out.status.success(), "skopeo copy in: {}\n{}", output_text(&out), common::requests_seen(&b));
    let served = Reg::new(&b).with_http(ca.http()).with(&Creds::admin()).served("admin/skopeo", "v1").await;
    assert_eq!(served.digest, desc.digest);
    let back = tempfile::tempdir().unwrap();
    let back_ref = format!("oci:{}:v1", back.path().display());
    let out = copy(&["--src-tls-verify=true", "--src-cert-dir", certs, "--src-creds", &creds], &dest, &back_ref);
    assert!(out.status.success(), "skopeo copy out: {}", output_text(&out));
    assert_eq!(common::skopeo::layout_ref(back.path(), "v1")["digest"], desc.digest.as_str());

    // podman: login, pull, push under another name, with the CA; refused without it.
    let podman = Containers::new("podman");
    let image = format!("{}/admin/skopeo:v1", b.host());
    let out = podman.output(&["pull", "--tls-verify=true", "--creds", &creds, &image]);
    assert!(!out.status.success(), "podman without the CA must fail");
    assert!(output_text(&out).contains("certificate"), "{}", output_text(&out));
    let out = podman.output(&[
        "login",
        "--tls-verify=true",
        "--cert-dir",
        certs,
        "-u",
        "admin",
        "-p",
        ADMIN_PASSWORD,
        &b.host(),
    ]);
    assert!(out.status.success(), "podman login: {}", output_text(&out));
    podman.run(&b, &["pull", "--tls-verify=true", "--cert-dir", certs, &image]);
    let copy_ref = format!("{}/admin/podman:v2", b.host());
    podman.run(&b, &["tag", &image, &copy_ref]);
    podman.run(&b, &["push", "--tls-verify=true", "--cert-dir", certs, &copy_ref]);
    let pushed = Reg::new(&b).with_http(ca.http()).with(&Creds::admin()).served("admin/podman", "v2").await;
    assert_eq!(pushed.layers(), served.layers(), "podman pushed the same layers");
}

// ---- the docker engine -------------------------------------------------------------------------

/// Lines added to `/etc/hosts` and a `certs.d` directory for one test, removed when dropped
/// (also when an assertion fails).
struct HostSetup {
    hosts_line: Option<String>,
    /// The `certs.d/HOST` directory made, and `certs.d` itself if it was made too.
    certs_dirs: Vec<PathBuf>,
}

impl HostSetup {
    /// Makes `name` resolve to `::1` (edited in place: /etc/hosts may be a bind mount).
    fn resolve(name: &str) -> HostSetup {
        let line = format!("::1 {name} # berth tls test {}", std::process::id());
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
        std::fs::write("/etc/hosts", format!("{}{line}\n", if hosts.ends_with('\n') { hosts } else { hosts + "\n" }))
            .expect("the docker test edits /etc/hosts (run as root)");
        HostSetup { hosts_line: Some(line), certs_dirs: Vec::new() }
    }

    /// Nothing in `/etc/hosts` (for [`HostSetup::trust`] alone).
    fn new() -> HostSetup {
        HostSetup { hosts_line: None, certs_dirs: Vec::new() }
    }

    /// Puts `ca` in `/etc/docker/certs.d/HOST/ca.crt`; that directory.
    fn trust(&mut self, host: &str, ca: &TestCa) -> PathBuf {
        let certs_d = Path::new("/etc/docker/certs.d");
        if !certs_d.exists() {
            std::fs::create_dir_all(certs_d).unwrap();
            self.certs_dirs.push(certs_d.to_path_buf());
        }
        let dir = certs_d.join(host);
        std::fs::create_dir(&dir).unwrap();
        self.certs_dirs.insert(0, dir.clone());
        std::fs::write(dir.join("ca.crt"), ca.ca_pem()).unwrap();
        dir
    }
}

impl Drop for HostSetup {
    fn drop(&mut self) {
        if let (Some(line), Ok(hosts)) = (&self.hosts_line, std::fs::read_to_string("/etc/hosts")) {
            let kept: String = hosts.lines().filter(|l| l != line).map(|l| format!("{l}\n")).collect();
            let _ = std::fs::write("/etc/hosts", kept);
        }
        if let Some(dir) = self.certs_dirs.first() {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(parent) = self.certs_dirs.get(1) {
            let _ = std::fs::remove_dir(parent); // only if empty
        }
    }
}

/// The docker engine verifies registries that are not on 127.0.0.0/8: on a name for `::1` it
/// refuses the test CA's certificate until `/etc/docker/certs.d/NAME:PORT/ca.crt` holds the CA,
/// then logs in, pushes and pulls; logged out, it pulls with a robot's client certificate
/// (`client.cert` + `client.key` in that directory) and no password.
#[tokio::test]
async fn docker_verifies_over_ipv6_with_certs_d() {
    use common::docker::{DockerClient, Images, local_app, repo_digests};
    common::docker::require_tools();
    let name = format!("berth-tls-{}.test", std::process::id());
    let mut setup = HostSetup::resolve(&name);
    let ca = TestCa::new("Berth test CA");
    let client_ca = TestCa::new("Berth clients CA");
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = ca.server(&[name.as_str()]).write(files.path(), "server");
    let mtls = format!("client_ca_file = \"{}\"", client_ca.ca_file().display());
    let b =
        Berth::start_https(&tls_toml(&cert, &key, &mtls), &[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)], "::1", &name);
    b.cli(&["namespace", "create", "team"]);
    b.cli(&["robot", "create", "team", "ci", "--role", "reader"]);
    let host = b.host();
    let client = DockerClient::new(&host);

    let out = client.login("admin", ADMIN_PASSWORD);
    assert!(!out.status.success(), "docker must refuse the certificate without the CA");
    assert!(output_text(&out).contains("x509"), "{}", output_text(&out));

    let certs_d = setup.trust(&host, &ca);
    let out = client.login("admin", ADMIN_PASSWORD);
    assert!(out.status.success(), "docker login with the CA: {}", output_text(&out));
    let mut images = Images::new();
    let (app, _) = local_app(&b, &mut images, "tls");
    let remote = images.add(format!("{host}/team/app:v1"));
    client.run(&["tag", &app, &remote]);
    let out = client.run(&["push", &remote]);
    let digest = common::docker::pushed_digest(&out);
    let served = Reg::new(&b)
        .with_http(ca.http_builder().resolve(&name, b_addr(&b)).build().unwrap())
        .with(&Creds::admin())
        .served("team/app", "v1")
        .await;
    assert_eq!(served.digest, digest);
    client.run(&["rmi", &remote]);
    client.run(&["pull", &remote]);
    assert!(repo_digests(&remote).iter().any(|d| d.ends_with(&digest)), "{:?}", repo_digests(&remote));

    // Logged out, the private namespace is refused; with the robot's certificate it is not.
    client.logout();
    client.run(&["rmi", &remote]);
    let out = client.output(&["pull", &remote]);
    assert!(!out.status.success(), "an anonymous pull of a private namespace");
    let robot = client_ca.client("team+ci");
    std::fs::write(certs_d.join("client.cert"), &robot.cert_pem).unwrap();
    std::fs::write(certs_d.join("client.key"), &robot.key_pem).unwrap();
    let out = client.output(&["pull", &remote]);
    assert!(out.status.success(), "docker pull with the robot's certificate: {}", output_text(&out));
    assert!(repo_digests(&remote).iter().any(|d| d.ends_with(&digest)), "{:?}", repo_digests(&remote));
}

/// The socket address of a server started on `::1`.
fn b_addr(b: &Berth) -> std::net::SocketAddr {
    std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, b.port))
}

// ---- reload --------------------------------------------------------------------------------------

/// Renewed files are served to new connections while a 512 MiB download started before goes
/// on to its end; a corrupt certificate, a key of another certificate, an empty key file and an
/// expired certificate are refused with a log line and the last good certificate stays.
#[tokio::test]
async fn reload_during_a_download_and_bad_files_are_refused() {
    let ca = TestCa::new("Berth test CA");
    let (b, first, files) = start_https(
        &ca,
        "reload_check_secs = 1",
        &[("BERTH_AUTH__ENABLED", "false"), ("BERTH_LOG", "warn,berth::tls=info")],
    );
    let url = format!("{}/v2/", b.base);
    assert_eq!(served_serial(&ca, &url).await.unwrap(), first.serial);

    let size = 512 << 20;
    let data: Vec<u8> = (0..size).map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let reg = Reg::new(&b).with_http(ca.http());
    let digest = reg.upload("big/blob", &data).await;
    drop(data);

    // Start the download, read a little, and leave it waiting on the client.
    let http = ca.http();
    let mut resp = http.get(format!("{}/v2/big/blob/blobs/{digest}", b.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut got = 0usize;
    while got < 8 << 20 {
        let chunk = resp.chunk().await.unwrap().expect("more of the blob");
        sha2::Digest::update(&mut hasher, &chunk);
        got += chunk.len();
    }

    // Renewal: new files, by rename.
    let second = ca.server(&["127.0.0.1", "localhost"]);
    second.write(files.path(), "server");
    assert!(
        eventually(10, || async { served_serial(&ca, &url).await.ok() == Some(second.serial.clone()) }).await,
        "new connections get the renewed certificate"
    );
    assert!(eventually(10, || async { b.log().contains("reloaded the TLS certificate") }).await, "{}", b.log());

    // The download started before the reload goes on to its end, byte for byte.
    while let Some(chunk) = resp.chunk().await.expect("the download goes on") {
        sha2::Digest::update(&mut hasher, &chunk);
        got += chunk.len();
    }
    assert_eq!(got, size);
    assert_eq!(format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher))), digest);

    // Bad replacements: each refused with a log line, the second certificate stays.
    let third = ca.server(&["127.0.0.1"]);
    let cert_path = files.path().join("server.crt");
    let key_path = files.path().join("server.key");
    let refusals = |log: &str| log.matches("refused the new TLS certificate files").count();
    let expired = ca.expired_server(&["127.0.0.1"]);
    let cases: [(&str, Vec<u8>, Vec<u8>); 4] = [
        (
            "a corrupt certificate",
            b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n".to_vec(),
            second.key_pem.clone().into(),
        ),
        ("the key of another certificate", third.cert_pem.clone().into(), second.key_pem.clone().into()),
        ("an empty key file", second.cert_pem.clone().into(), Vec::new()),
        ("an expired certificate", expired.cert_pem.clone().into(), expired.key_pem.clone().into()),
    ];
    for (i, (what, cert, key)) in cases.iter().enumerate() {
        replace_file(&key_path, key);
        replace_file(&cert_path, cert);
        assert!(
            eventually(10, || async { refusals(&b.log()) > i }).await,
            "{what}: no refusal in the log:\n{}",
            b.log()
        );
        assert_eq!(served_serial(&ca, &url).await.unwrap(), second.serial, "{what}: the last good certificate stays");
    }
    // Fixed files are taken again.
    third.write(files.path(), "server");
    assert!(
        eventually(10, || async { served_serial(&ca, &url).await.ok() == Some(third.serial.clone()) }).await,
        "a good pair after bad ones is served"
    );
}

/// With `reload_check_secs = 0` the files are read again only on SIGHUP, which does not stop
/// the server.
#[tokio::test]
async fn sighup_reloads() {
    let ca = TestCa::new("Berth test CA");
    let (b, first, files) = start_https(
        &ca,
        "reload_check_secs = 0",
        &[("BERTH_AUTH__ENABLED", "false"), ("BERTH_LOG", "warn,berth::tls=info")],
    );
    let url = format!("{}/v2/", b.base);
    let second = ca.server(&["127.0.0.1"]);
    second.write(files.path(), "server");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(served_serial(&ca, &url).await.unwrap(), first.serial, "no reload without SIGHUP");
    common::run(Command::new("kill").args(["-HUP", &b.pid().to_string()]));
    assert!(
        eventually(10, || async { served_serial(&ca, &url).await.ok() == Some(second.serial.clone()) }).await,
        "SIGHUP reloads:\n{}",
        b.log()
    );
    assert!(eventually(10, || async { b.log().contains("SIGHUP: reloaded the TLS certificate") }).await, "{}", b.log());
}

// ---- client certificates -----------------------------------------------------------------------

/// A server that verifies client certificates of `client_ca` (`client_auth` = `mode`).
fn start_mtls(server_ca: &TestCa, client_ca: &TestCa, mode: &str) -> (Berth, tempfile::TempDir) {
    let extra = format!("client_ca_file = \"{}\"\nclient_auth = \"{mode}\"", client_ca.ca_file().display());
    let (b, _, files) = start_https(server_ca, &extra, &[("BERTH_LOG", "warn,berth::access=info")]);
    (b, files)
}

/// With `client_auth = "required"` a client without a certificate (or with one of another
/// CA) cannot complete the handshake; a robot's certificate pulls without a password, in its
/// namespace only, with reqwest and skopeo; a user's certificate is that user at `/token`.
#[tokio::test]
async fn mutual_tls_required_and_certificates_as_logins() {
    let server_ca = TestCa::new("Berth test CA");
    let client_ca = TestCa::new("Berth clients CA");
    let stranger_ca = TestCa::new("Someone else's CA");
    let (b, _files) = start_mtls(&server_ca, &client_ca, "required");
    b.cli(&["namespace", "create", "team"]);
    b.cli(&["namespace", "create", "other"]);
    b.cli(&["robot", "create", "team", "ci", "--role", "reader"]);
    let admin_cert = client_ca.client("admin");
    let admin = Reg::new(&b).with_http(server_ca.http_as(&admin_cert)).with(&Creds::admin());
    let image = common::images::tiny("team/app");
    let digest = admin.push_image("team/app", "v1", &image).await;
    admin.push_image("other/app", "v1", &common::images::tiny("other/app")).await;

    // No certificate, or one of a CA not configured: no handshake.
    let url = format!("{}/v2/", b.base);
    let e = server_ca.http().get(&url).send().await.expect_err("no client certificate");
    assert!(e.is_connect() || e.is_request(), "{e:?}");
    let stranger = stranger_ca.client("team+ci");
    assert!(server_ca.http_as(&stranger).get(&url).send().await.is_err(), "a certificate of another CA");
    let out = curl(&["--cacert", server_ca.ca_file().to_str().unwrap(), "-o", "/dev/null", &url]);
    assert!(!out.status.success(), "curl without a client certificate: {}", output_text(&out));

    // The robot's certificate, no password: pulls in its namespace, nowhere else.
    let robot_cert = client_ca.client("team+ci");
    let robot = Reg::new(&b).with_http(server_ca.http_as(&robot_cert));
    assert_eq!(robot.status(Method::GET, "/v2/").await, StatusCode::OK);
    let r = robot.get_manifest("team/app", "v1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let (status, code, _) = common::registry::error_of(robot.get_manifest("other/app", "v1").await).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "DENIED"), "the robot may not pull other/");
    let r = robot.put_manifest("team/app", "v2", common::images::OCI_MANIFEST, &image.manifest()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a reader robot may not push");
    // The token endpoint takes the certificate as the login (docker's token flow).
    let token = robot.token(&["repository:team/app:pull"]).await;
    assert_eq!(common::registry::jwt_claims(&token)["sub"], "team+ci");
    // A certificate naming no account is anonymous.
    let nobody = Reg::new(&b).with_http(server_ca.http_as(&client_ca.client("nobody")));
    assert_eq!(nobody.status(Method::GET, "/v2/").await, StatusCode::UNAUTHORIZED);
    // Credentials sent with a certificate win over it.
    let r = robot.with(&Creds::basic("admin", "wrong-password")).send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // skopeo with the robot's certificate in its directory, no credentials.
    let skopeo = Skopeo::new();
    let certs = server_ca.cert_dir(Some(&robot_cert));
    let certs = certs.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = format!("docker://{}/team/app:v1", b.host());
    let out = skopeo.output(&[
        "copy",
        "--quiet",
        "--src-tls-verify=true",
        "--src-cert-dir",
        certs,
        &src,
        &format!("oci:{}:v1", dir.path().display()),
    ]);
    assert!(
        out.status.success(),
        "skopeo with the robot's certificate: {}\n{}",
        output_text(&out),
        common::requests_seen(&b)
    );
    let out = skopeo.output(&[
        "inspect",
        "--raw",
        "--tls-verify=true",
        "--cert-dir",
        certs,
        &format!("docker://{}/other/app:v1", b.host()),
    ]);
    assert!(!out.status.success(), "skopeo with the robot's certificate outside its namespace");
}

/// With `client_auth = "optional"` clients without a certificate are served as before
/// (anonymous, or their credentials), and a disabled account's certificate logs nobody in.
#[tokio::test]
async fn mutual_tls_optional() {
    let server_ca = TestCa::new("Berth test CA");
    let client_ca = TestCa::new("Berth clients CA");
    let (b, _files) = start_mtls(&server_ca, &client_ca, "optional");
    b.cli_stdin(&["user", "add", "alice", "--password-stdin"], "alice-password-1");
    let plain = Reg::new(&b).with_http(server_ca.http());
    assert_eq!(plain.status(Method::GET, "/v2/").await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        plain.with(&Creds::basic("alice", "alice-password-1")).status(Method::GET, "/v2/").await,
        StatusCode::OK
    );
    let alice = Reg::new(&b).with_http(server_ca.http_as(&client_ca.client("alice")));
    assert_eq!(alice.status(Method::GET, "/v2/").await, StatusCode::OK);
    let digest = alice.push_image("alice/app", "v1", &common::images::tiny("alice/app")).await;
    assert!(digest.starts_with("sha256:"));
    b.cli(&["user", "disable", "alice"]);
    let alice_again = Reg::new(&b).with_http(server_ca.http_as(&client_ca.client("alice")));
    assert_eq!(alice_again.status(Method::GET, "/v2/").await, StatusCode::UNAUTHORIZED);
}

// ---- Berth as a client of a private HTTPS registry ------------------------------------------------

/// A mirror whose upstream is a Berth over HTTPS with the test CA that requires client
/// certificates: with the upstream's `ca_file` and a client certificate it pulls through;
/// without the certificate, or without the CA, the upstream is refused.
#[tokio::test]
async fn mirror_trusts_a_private_upstream_ca() {
    let ca = TestCa::new("Berth test CA");
    let client_ca = TestCa::new("Berth clients CA");
    let mtls = format!("client_ca_file = \"{}\"\nclient_auth = \"required\"", client_ca.ca_file().display());
    let (upstream, _, files) = start_https(&ca, &mtls, &[("BERTH_AUTH__ENABLED", "false")]);
    let image = common::images::tiny("lib/app");
    let mirror_cert = client_ca.client("mirror");
    let up = Reg::new(&upstream).with_http(ca.http_as(&mirror_cert));
    let digest = up.push_image("lib/app", "v1", &image).await;
    let (cert, key) = mirror_cert.write(files.path(), "mirror-client");

    let mirror_toml = |ca_file: &Path, client: bool| {
        let mut t = format!(
            "[mirror]\nenabled = true\n[[mirror.upstreams]]\nname = \"private\"\nurl = \"{}\"\nca_file = \"{}\"\ntimeout_secs = 5\n",
            upstream.base,
            ca_file.display()
        );
        if client {
            t.push_str(&format!(
                "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
                cert.display(),
                key.display()
            ));
        }
        t
    };
    let open = [("BERTH_AUTH__ENABLED", "false")];
    let mirror = Berth::start_with_config(&mirror_toml(&ca.ca_file(), true), &open);
    let r = Reg::new(&mirror).get_manifest("private/lib/app", "v1").await;
    assert_eq!(r.status(), StatusCode::OK, "{}", mirror.log());
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let layer = image.layer_digest(0);
    let blob = Reg::new(&mirror).get_blob("private/lib/app", &layer).await;
    assert_eq!(sha256(&blob), layer);

    for (what, toml) in [
        ("without the client certificate", mirror_toml(&ca.ca_file(), false)),
        ("without the CA", mirror_toml(Path::new(""), true)),
    ] {
        let other = Berth::start_with_config(&toml, &open);
        let r = Reg::new(&other).get_manifest("private/lib/app", "v1").await;
        assert!(r.status().is_server_error(), "{what} the upstream is refused: {}", r.status());
    }
}

/// `berth run` pulls `HOST:PORT/repo:tag` from a Berth over HTTPS with `--ca-file`, over
/// HTTPS even on loopback, and refuses the certificate with the wrong CA.
#[test]
fn berth_run_pulls_from_a_private_https_registry() {
    use common::docker::{Images, docker, import_busybox};
    common::docker::require_tools();
    let ca = TestCa::new("Berth test CA");
    let (source, _, _files) = start_https(&ca, "", &[("BERTH_AUTH__ENABLED", "false")]);
    let mut images = Images::new();
    let local = images.add(format!("local/tls-run-{}:latest", source.port));
    import_busybox(&local);
    // The engine skips verification on 127.0.0.0/8, so it pushes over HTTPS without the CA.
    let remote = images.add(format!("{}/rt/busybox:latest", source.host()));
    docker(&["tag", &local, &remote]);
    docker(&["push", &remote]);

    let store = Berth::start();
    let run = |ca_file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--data-dir")
            .arg(&store.data_dir)
            .args(["run", "--rm", "--ca-file"])
            .arg(ca_file)
            .args([remote.as_str(), "echo", "pulled"])
            .env_remove("BERTH_LOG")
            .output()
            .unwrap()
    };
    let stranger = TestCa::new("Someone else's CA");
    let out = run(&stranger.ca_file());
    assert!(!out.status.success(), "a certificate the CA did not issue must be refused");
    assert!(output_text(&out).to_lowercase().contains("certificate"), "{}", output_text(&out));
    let out = run(&ca.ca_file());
    assert!(out.status.success(), "berth run --ca-file: {}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pulled\n");
}

/// `berth run` presents the client certificate in docker's `/etc/docker/certs.d/HOST:PORT/`
/// (`client.cert` + `client.key`, beside `ca.crt`) to a registry that requires one.
#[test]
fn berth_run_presents_a_client_certificate_from_certs_d() {
    use common::docker::{Images, docker, import_busybox};
    common::docker::require_tools();
    let ca = TestCa::new("Berth test CA");
    let client_ca = TestCa::new("Berth clients CA");
    let mtls = format!("client_ca_file = \"{}\"\nclient_auth = \"required\"", client_ca.ca_file().display());
    let (source, _, _files) = start_https(&ca, &mtls, &[("BERTH_AUTH__ENABLED", "false")]);
    let reg = Reg::new(&source).with_http(ca.http_as(&client_ca.client("pusher")));
    // Push a busybox image: saved by the engine, its blobs and manifest put over HTTPS.
    let mut images = Images::new();
    let local = images.add(format!("local/tls-mtls-run-{}:latest", source.port));
    import_busybox(&local);
    let saved = tempfile::tempdir().unwrap();
    let archive = saved.path().join("image.tar");
    docker(&["save", "-o", archive.to_str().unwrap(), &local]);
    common::run(Command::new("tar").arg("-C").arg(saved.path()).arg("-xf").arg(&archive));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved.path().join("manifest.json")).unwrap()).unwrap();
    let config = std::fs::read(saved.path().join(index[0]["Config"].as_str().unwrap())).unwrap();
    let layer = std::fs::read(saved.path().join(index[0]["Layers"][0].as_str().unwrap())).unwrap();
    let image = common::images::Image::new(config, vec![layer]).docker();
    common::block_on(reg.push_image("rt/busybox", "latest", &image));
    let remote = format!("{}/rt/busybox:latest", source.host());

    let store = Berth::start();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--data-dir")
            .arg(&store.data_dir)
            .args(["run", "--rm", remote.as_str(), "echo", "pulled"])
            .env_remove("BERTH_LOG")
            .output()
            .unwrap()
    };
    let mut setup = HostSetup::new();
    let dir = setup.trust(&source.host(), &ca);
    let out = run();
    assert!(!out.status.success(), "no client certificate: the handshake fails");
    let robot = client_ca.client("puller");
    std::fs::write(dir.join("client.cert"), &robot.cert_pem).unwrap();
    std::fs::write(dir.join("client.key"), &robot.key_pem).unwrap();
    let out = run();
    assert!(out.status.success(), "berth run with certs.d's client certificate: {}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pulled\n");
}
