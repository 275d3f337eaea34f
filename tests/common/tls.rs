//! HTTPS in tests: a test CA made with rcgen ([`TestCa`]) that issues server and client
//! certificates (RSA, ECDSA or Ed25519 keys) into files, HTTP clients that trust it, and what
//! certificate a server hands a new connection ([`served_serial`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber, SignatureAlgorithm,
};

/// A certificate authority of one test, with its files in a temporary directory.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, as PEM, with the serial (upper-case hex, as `openssl x509 -serial`).
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: String,
}

impl Issued {
    /// Writes `NAME.crt` and `NAME.key` into `dir` (each replaced by a rename, as renewal
    /// tools do); their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        replace_file(&cert, self.cert_pem.as_bytes());
        replace_file(&key, self.key_pem.as_bytes());
        (cert, key)
    }
}

/// Writes a file through a temporary file and a rename, so readers see the old or the new
/// content, never half of it.
pub fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

static SERIAL: AtomicU64 = AtomicU64::new(0x1000);

fn next_serial() -> (SerialNumber, String) {
    // Unique in the process and across runs (the high bits from the clock).
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let n = (((nanos >> 16) << 16) | (SERIAL.fetch_add(1, Ordering::SeqCst) & 0xffff)) & 0x7fff_ffff_ffff_ffff;
    let bytes = n.to_be_bytes();
    (SerialNumber::from_slice(&bytes), hex::encode_upper(bytes).trim_start_matches("00").to_string())
}

impl TestCa {
    /// A new CA (ECDSA P-256) whose certificate is `DIR/ca.crt`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationName, "Berth tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(next_serial().0);
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), &pem).unwrap();
        TestCa { dir, issuer: Issuer::new(params, key), pem }
    }

    /// `DIR/ca.crt`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    fn issue(&self, cn: &str, names: &[&str], alg: &'static SignatureAlgorithm, server: bool) -> Issued {
        self.issue_with(cn, names, alg, server, |_| {})
    }

    fn issue_with(
        &self,
        cn: &str,
        names: &[&str],
        alg: &'static SignatureAlgorithm,
        server: bool,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let (serial, serial_hex) = next_serial();
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), serial: serial_hex }
    }

    /// A server certificate for `names` (DNS names or IP addresses) with an ECDSA P-256 key.
    pub fn server(&self, names: &[&str]) -> Issued {
        self.server_with(names, &rcgen::PKCS_ECDSA_P256_SHA256)
    }

    /// A server certificate with a key of the algorithm `alg` (`rcgen::PKCS_RSA_SHA256`,
    /// `PKCS_ECDSA_P384_SHA384`, `PKCS_ED25519`, …).
    pub fn server_with(&self, names: &[&str], alg: &'static SignatureAlgorithm) -> Issued {
        self.issue(names.first().copied().unwrap_or("berth"), names, alg, true)
    }

    /// A server certificate for `names` that expired yesterday.
    pub fn expired_server(&self, names: &[&str]) -> Issued {
        self.issue_with(names[0], names, &rcgen::PKCS_ECDSA_P256_SHA256, true, |p| {
            let now = std::time::SystemTime::now();
            p.not_before = (now - std::time::Duration::from_secs(10 * 86_400)).into();
            p.not_after = (now - std::time::Duration::from_secs(86_400)).into();
        })
    }

    /// A client certificate whose subject's common name is `cn`.
    pub fn client(&self, cn: &str) -> Issued {
        self.issue(cn, &[], &rcgen::PKCS_ECDSA_P256_SHA256, false)
    }

    /// A certificate directory as skopeo and podman read it (`--cert-dir`): `ca.crt`, and with a
    /// client certificate `client.cert` + `client.key`.
    pub fn cert_dir(&self, client: Option<&Issued>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), &self.pem).unwrap();
        if let Some(c) = client {
            std::fs::write(dir.path().join("client.cert"), &c.cert_pem).unwrap();
            std::fs::write(dir.path().join("client.key"), &c.key_pem).unwrap();
        }
        dir
    }

    /// An HTTP client (as [`super::client`]: no redirects) that trusts this CA only.
    pub fn http(&self) -> reqwest::Client {
        self.http_builder().build().unwrap()
    }

    /// The same, presenting a client certificate.
    pub fn http_as(&self, client: &Issued) -> reqwest::Client {
        let identity =
            reqwest::Identity::from_pem(format!("{}{}", client.cert_pem, client.key_pem).as_bytes()).unwrap();
        self.http_builder().identity(identity).build().unwrap()
    }

    pub fn http_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(std::time::Duration::from_secs(2))
            .tls_certs_only([reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap()])
            .tls_info(true)
    }
}

/// The serial (upper-case hex) of the certificate a new connection to `url` is served, through
/// a client that trusts `ca` (a fresh client: no connection or session is reused).
pub async fn served_serial(ca: &TestCa, url: &str) -> Result<String, String> {
    let http = ca.http_builder().pool_max_idle_per_host(0).build().unwrap();
    let resp = http.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().ok_or("no TLS info")?;
    let der = info.peer_certificate().ok_or("no peer certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(cert.raw_serial_as_string().replace(':', "").to_uppercase().trim_start_matches("00").to_string())
}
