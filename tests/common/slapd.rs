//! A private OpenLDAP server (Debian's `slapd`) for the directory tests: its own config file,
//! database and port under a temp dir, the tree `dc=berth,dc=test` with `ou=people` and
//! `ou=groups` (groupOfNames), loaded and changed with `ldapadd`/`ldapmodify`. The system's
//! slapd (if any) is not touched. Stopped (and started again) by the test; killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, run};

pub const SUFFIX: &str = "dc=berth,dc=test";
pub const ROOT_DN: &str = "cn=admin,dc=berth,dc=test";
pub const ROOT_PASSWORD: &str = "directory-admin-1";

pub struct Slapd {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Fails with what to install when a tool is missing (never a skip).
pub fn require_tools() {
    for tool in ["slapd", "ldapadd", "ldapmodify"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| PathBuf::from(d).join(tool).exists());
        assert!(found, "{tool} is missing: apt-get install -y slapd ldap-utils (scripts/prereqs test does)");
    }
}

impl Slapd {
    /// Starts a server with the base tree.
    pub fn start() -> Slapd {
        Self::start_inner(false)
    }

    /// Starts a server with the base tree that offers StartTLS, with a certificate for
    /// 127.0.0.1 from a CA of its own ([`Slapd::ca_file`]).
    pub fn start_tls() -> Slapd {
        Self::start_inner(true)
    }

    /// The CA that signed the certificate of a [`Slapd::start_tls`] server.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_inner(tls: bool) -> Slapd {
        require_tools();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("db")).unwrap();
        let mut conf = format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\ninclude /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {d}/slapd.pid\n\
             database mdb\nsuffix \"{SUFFIX}\"\nrootdn \"{ROOT_DN}\"\nrootpw {ROOT_PASSWORD}\ndirectory {d}/db\n",
            d = dir.path().display()
        );
        if tls {
            make_certificate(dir.path());
            // Global directives go before `database`.
            let tls_lines = format!(
                "TLSCertificateFile {d}/cert.pem\nTLSCertificateKeyFile {d}/key.pem\n",
                d = dir.path().display()
            );
            conf = conf.replacen("database mdb", &format!("{tls_lines}database mdb"), 1);
        }
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        let mut s = Slapd { port: free_port(), dir, child: None };
        s.spawn();
        s.add(&format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: berth\ndc: berth\n\n\
             dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n"
        ));
        s
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("slapd.conf");
        let child = Command::new("slapd")
            .args(["-d", "0", "-h", &format!("ldap://127.0.0.1:{}/", self.port), "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start slapd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "slapd did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again after [`Slapd::stop`].
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn ldif(&self, tool: &str, ldif: &str) {
        let path = self.dir.path().join("change.ldif");
        std::fs::write(&path, ldif).unwrap();
        run(Command::new(tool).args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PASSWORD, "-f"]).arg(&path));
    }

    /// `ldapadd` of LDIF entries.
    pub fn add(&self, ldif: &str) {
        self.ldif("ldapadd", ldif);
    }

    /// `ldapmodify` with an LDIF change.
    pub fn modify(&self, ldif: &str) {
        self.ldif("ldapmodify", ldif);
    }

    /// Adds a person `uid=NAME,ou=people` with a password.
    pub fn add_user(&self, name: &str, password: &str) {
        self.add(&format!(
            "dn: uid={name},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {name}\ncn: {name}\nsn: {name}\n\
             userPassword: {password}\n"
        ));
    }

    pub fn user_dn(name: &str) -> String {
        format!("uid={name},ou=people,{SUFFIX}")
    }

    /// Adds a group `cn=NAME,ou=groups` with members (user names), and a placeholder member
    /// (`groupOfNames` must have one, so that the last user can be removed).
    pub fn add_group(&self, name: &str, members: &[&str]) {
        let mut members: String = members.iter().map(|m| format!("member: {}\n", Self::user_dn(m))).collect();
        members.push_str(&format!("member: cn=nobody,{SUFFIX}\n"));
        self.add(&format!("dn: cn={name},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {name}\n{members}"));
    }

    /// Removes a user from a group.
    pub fn remove_member(&self, group: &str, user: &str) {
        self.modify(&format!(
            "dn: cn={group},ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: {}\n",
            Self::user_dn(user)
        ));
    }

    /// The `[auth.ldap]` section that points Berth at this server.
    pub fn berth_config(&self, extra: &str) -> String {
        format!(
            "[auth.ldap]\nurl = \"{url}\"\nbind_dn = \"{ROOT_DN}\"\nbind_password = \"{ROOT_PASSWORD}\"\n\
             user_base = \"ou=people,{SUFFIX}\"\ngroup_base = \"ou=groups,{SUFFIX}\"\n{extra}\n",
            url = self.url()
        )
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, with openssl, in `dir`.
fn make_certificate(dir: &std::path::Path) {
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").current_dir(dir).args(args));
    };
    openssl(
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"]
            .iter()
            .copied()
            .chain(["-subj", "/CN=berth test directory CA"])
            .collect::<Vec<_>>(),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
