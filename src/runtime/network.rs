//! Container networks: `--network bridge` (the default, as docker's), `none` and `host`.
//!
//! A bridge container gets a network namespace that Berth creates before the container starts
//! and keeps as a bind mount at `/run/berth/netns/<id>` (the OCI spec names that path, so
//! libcontainer joins it): a veth pair (host end `vb<12 hex of the id>` on the bridge, the other
//! end `eth0` inside, up, with a leased address and a default route via the bridge's address),
//! and `lo` up. A `none` container gets such a namespace with `lo` only. The bridge (`berth0`,
//! `[runtime] bridge`) holds the first address of `[runtime] subnet` (default 10.89.0.0/24, clear
//! of docker's 172.17.0.0/16) and exists while some container leases an address on it.
//!
//! **Host-wide state** (`/run/berth/net/<bridge>/`: `lock`, `leases/<address>` holding the
//! container id): the bridge and its rules are shared by every Berth data directory on the
//! host, so addresses are leased under this lock, not the data dir's runtime lock (two data
//! dirs, e.g. two test servers, never get the same address). Order: the runtime lock, then
//! this one. `/run` is a tmpfs, so leases go with a reboot, as the bridge does.
//!
//! **Netlink**: links, addresses and routes are made with `netlink-packet-route` over a
//! `netlink-sys` socket, synchronously: the monitor is single-threaded and must stay free of an
//! async runtime when libcontainer forks, and these are the crates (and versions) libcontainer
//! itself uses, so nothing new is compiled. Work inside the container's namespace happens on a
//! short-lived thread that `setns`es into it (a network namespace is per thread).
//!
//! **NAT and forwarding**: outbound masquerade of the subnet is one rule in a table of Berth's
//! own, `ip berth_<bridge>`, added over netlink (`nft.rs`: `netlink-packet-netfilter` messages
//! on a `NETLINK_NETFILTER` socket, no `nft` process) as one nftables transaction, and deleted
//! as a whole on teardown in another (so nothing of it can linger; no `list` round trip: a
//! missing table is ENOENT). nftables cannot let through what another table drops, and the
//! Docker Engine sets the `filter` FORWARD policy to DROP: when its `DOCKER-USER` chain exists
//! (the chain docker keeps for its users' rules) two rules are inserted there (from the bridge;
//! back to it for established connections), tagged with the comment `berth:<bridge>`. Those stay
//! with iptables, as docker's table must keep parsing for docker's iptables-nft: one
//! `iptables-restore -w --noflush` adds both, one with the exact `-D` lines removes them (if
//! that fails, e.g. a rule was removed by hand, the tagged rules are looked up in
//! `iptables-save` and deleted one by one). Whether DOCKER-USER exists is one read-only netlink
//! `GETCHAIN` of `ip filter DOCKER-USER` (with iptables-legacy, `iptables -L`). The
//! `iptables-restore` process runs while the bridge is made, or deleted, here. The rules
//! marker (`/run/berth/net/<bridge>/rules`, written before any rule is added) records what was
//! added, so a teardown after a crash knows what to remove. IPv4 forwarding is switched on
//! (`net.ipv4.ip_forward`, as docker does) if it is off. Without docker, nothing filters
//! forwarded packets by default; a host firewall that does must let the bridge through itself.
//!
//! Teardown (`teardown`) runs when the monitor sees the container exit, on `rm`, and for a
//! container whose monitor died in the next berth command's recovery: it removes the lease,
//! deletes the veth and, when no lease is left on the bridge, the bridge (with its address),
//! the nft table and the DOCKER-USER rules, then the namespace mount (last: while it exists, a
//! later recovery runs the teardown again). The kernel's deletion of a link waits for RCU
//! callbacks (here about 10 ms for a veth, 40 ms for a bridge): the veth is deleted on a thread
//! of its own while the bridge goes, so those waits overlap. The veth is deleted explicitly,
//! not left to the namespace's end: the kernel cleans a namespace up asynchronously, so the
//! veth would outlive the teardown.

use std::fs::{self, File};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use serde::{Deserialize, Serialize};

mod nft;

/// Where container network namespaces are bind-mounted.
const NETNS_DIR: &str = "/run/berth/netns";
/// Host-wide network state (leases, lock), one directory per bridge.
const NET_DIR: &str = "/run/berth/net";

/// A container's network, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The host's network namespace.
    #[default]
    Host,
    /// A namespace with `lo` only.
    None,
    /// A veth on a bridge.
    Bridge,
}

impl Mode {
    pub fn parse(s: &str) -> anyhow::Result<Mode> {
        match s {
            "bridge" | "default" => Ok(Mode::Bridge),
            "none" => Ok(Mode::None),
            "host" => Ok(Mode::Host),
            other => bail!("--network {other:?} is not supported: use bridge (the default), host or none"),
        }
    }
}

/// The bridge a container is attached to (from the configuration when it was created).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    pub name: String,
    pub subnet: Ipv4Net,
}

impl Bridge {
    /// The bridge of `[runtime] bridge` and `subnet`, checked.
    pub fn from_config(name: &str, subnet: &str) -> anyhow::Result<Bridge> {
        if name.is_empty() || name.len() > 15 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("[runtime] bridge {name:?}: use 1 to 15 letters, digits or '_'");
        }
        let subnet: Ipv4Net =
            subnet.parse().with_context(|| format!("[runtime] subnet {subnet:?} is not an IPv4 network"))?;
        if subnet.prefix_len() > 29 {
            bail!("[runtime] subnet {subnet} is too small (at most /29)");
        }
        Ok(Bridge { name: name.to_string(), subnet: subnet.trunc() })
    }

    /// The bridge's own address, the containers' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.hosts().next().expect("a subnet of at most /29 has hosts")
    }

    fn dir(&self) -> PathBuf {
        Path::new(NET_DIR).join(&self.name)
    }

    fn leases(&self) -> PathBuf {
        self.dir().join("leases")
    }

    /// Present while the bridge's rules may exist (written before they are added).
    fn rules_marker(&self) -> PathBuf {
        self.dir().join("rules")
    }

    fn nft_table(&self) -> String {
        format!("berth_{}", self.name)
    }

    /// Takes the bridge's host-wide lock.
    fn lock(&self) -> anyhow::Result<File> {
        fs::create_dir_all(self.leases())?;
        let path = self.dir().join("lock");
        let file = File::options().create(true).truncate(false).write(true).open(&path)?;
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!("cannot lock {}: {}", path.display(), std::io::Error::last_os_error());
        }
        Ok(file)
    }
}

/// The network namespace mount of a container.
pub fn netns_path(id: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(id)
}

/// The host end of a container's veth pair.
pub fn veth_name(id: &str) -> String {
    format!("vb{}", &id[..12])
}

/// What the monitor set up for one start of a container.
pub struct Attached {
    /// The container's address (bridge mode).
    pub address: Option<Ipv4Addr>,
}

/// Creates the container's network namespace (mode none or bridge) and, for a bridge, the
/// bridge if needed, the address lease and the veth pair. Undone by [`teardown`], also when this
/// fails half-way.
pub fn setup(id: &str, mode: &Mode, bridge: Option<&Bridge>) -> anyhow::Result<Attached> {
    let result = (|| -> anyhow::Result<Attached> {
        match mode {
            Mode::Host => Ok(Attached { address: None }),
            Mode::None => {
                create_netns(id)?;
                in_netns(id, |nl| {
                    let lo = nl.index("lo")?.context("no lo")?;
                    nl.set_up(lo)
                })?;
                Ok(Attached { address: None })
            }
            Mode::Bridge => {
                let bridge = bridge.context("a bridge container without its bridge in its record")?;
                let address = {
                    let _lock = bridge.lock()?;
                    ensure_bridge(bridge)?;
                    lease(bridge, id)?
                };
                create_netns(id)?;
                attach(id, bridge, address)?;
                Ok(Attached { address: Some(address) })
            }
        }
    })();
    if result.is_err() {
        teardown(id, bridge);
    }
    result
}

/// Removes what [`setup`] made for the container (whatever is left of it: safe to repeat), and
/// the bridge with its rules when its last lease is gone. Errors are logged, not returned: a
/// teardown must go as far as it can.
pub fn teardown(id: &str, bridge: Option<&Bridge>) {
    let ns = netns_path(id);
    if let Some(bridge) = bridge {
        let leased = lease_of(bridge, id);
        if ns.exists() || leased.is_some() || link_exists(&veth_name(id)) {
            let _lock = match bridge.lock() {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(id, error = %e, "cannot lock the bridge's state");
                    return;
                }
            };
            let started = std::time::Instant::now();
            if let Some(a) = lease_of(bridge, id) {
                let _ = fs::remove_file(bridge.leases().join(a.to_string()));
            }
            // The kernel's deletion of a link waits for RCU callbacks (tens of ms here): the
            // veth goes on a thread of its own while the bridge and its rules go (if this was
            // the last lease), so those waits overlap. The namespace mount goes last: while it
            // exists, the next command's recovery runs this teardown again (after a crash).
            let veth = veth_name(id);
            let veth_deletion = std::thread::spawn(move || delete_link(&veth));
            if let Err(e) = remove_bridge_if_unused(bridge) {
                tracing::warn!(bridge = bridge.name, error = %e, "cannot remove the bridge");
            }
            match veth_deletion.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(id, error = %e, "cannot delete the container's veth"),
                Err(_) => tracing::warn!(id, "the veth's deletion panicked"),
            }
            remove_netns(id);
            tracing::debug!(id, ms = started.elapsed().as_millis() as u64, "network torn down");
        }
    } else if ns.exists() {
        remove_netns(id);
    }
}

/// Removes the bridge and its rules if no lease is left on it (after a crash between the last
/// lease's removal and the bridge's).
pub fn collect_unused_bridge(bridge: &Bridge) {
    if !bridge.dir().exists() && !link_exists(&bridge.name) {
        return;
    }
    match bridge.lock() {
        Ok(_lock) => {
            if let Err(e) = remove_bridge_if_unused(bridge) {
                tracing::warn!(bridge = bridge.name, error = %e, "cannot remove the bridge");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot lock the bridge's state"),
    }
}

/// The container's `/etc/resolv.conf`: the host's, unless it names only loopback resolvers (a
/// local stub the container cannot reach): then docker's fallback, Google's public resolvers.
/// Without a network (`none`) only the search domains and options are kept.
pub fn resolv_conf(mode: &Mode) -> String {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    match mode {
        Mode::Host => host,
        Mode::None => {
            host.lines().filter(|l| !l.trim_start().starts_with("nameserver")).map(|l| format!("{l}\n")).collect()
        }
        Mode::Bridge => {
            let mut out = String::new();
            let mut servers = 0;
            for l in host.lines() {
                let mut words = l.split_whitespace();
                if words.next() == Some("nameserver") {
                    match words.next().and_then(|a| a.parse::<IpAddr>().ok()) {
                        Some(a) if !a.is_loopback() => servers += 1,
                        _ => continue,
                    }
                }
                out.push_str(l);
                out.push('\n');
            }
            if servers == 0 {
                out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
            }
            out
        }
    }
}

/// The container's `/etc/hosts`: localhost, and its host name (and `--name`, if one was given)
/// at its address (bridge) or at 127.0.1.1.
pub fn hosts_file(hostname: &str, name: Option<&str>, address: Option<Ipv4Addr>) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    let names = match name {
        Some(n) if n != hostname => format!("{hostname} {n}"),
        _ => hostname.to_string(),
    };
    match address {
        Some(a) => out.push_str(&format!("{a}\t{names}\n")),
        None => out.push_str(&format!("127.0.1.1\t{names}\n")),
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Leases.

/// Leases the lowest free address of the subnet (not the network, the bridge's, the broadcast).
fn lease(bridge: &Bridge, id: &str) -> anyhow::Result<Ipv4Addr> {
    let gateway = bridge.gateway();
    for a in bridge.subnet.hosts().filter(|a| *a != gateway) {
        match File::options().write(true).create_new(true).open(bridge.leases().join(a.to_string())) {
            Ok(mut f) => {
                f.write_all(id.as_bytes())?;
                return Ok(a);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).context("cannot write an address lease"),
        }
    }
    bail!("no free address left in {} (bridge {})", bridge.subnet, bridge.name)
}

/// The address leased to `id`, if any.
fn lease_of(bridge: &Bridge, id: &str) -> Option<Ipv4Addr> {
    fs::read_dir(bridge.leases()).ok()?.flatten().find_map(|e| {
        let holder = fs::read_to_string(e.path()).ok()?;
        if holder.trim() == id { e.file_name().to_str()?.parse().ok() } else { None }
    })
}

// ---------------------------------------------------------------------------------------------
// The bridge, its NAT and forwarding rules.

/// What the rules marker records: the nft table was (or is being) added; DOCKER-USER rules too.
const MARK_NFT: &str = "nft";
const MARK_DOCKER_USER: &str = "docker-user";

fn ensure_bridge(bridge: &Bridge) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut nl = Netlink::open()?;
    if nl.index(&bridge.name)?.is_some() {
        return Ok(());
    }
    // Rules left by a crash between the bridge's removal and theirs: start clean.
    if let Some(left) = RuleRemoval::start(bridge) {
        left.finish(bridge);
    }
    // The DOCKER-USER rules are added by `iptables-restore`, a process that runs while the
    // bridge is made here (it names the bridge, which need not exist yet).
    let docker_user = docker_user_chain_exists();
    let marks = if docker_user { format!("{MARK_NFT}\n{MARK_DOCKER_USER}\n") } else { format!("{MARK_NFT}\n") };
    fs::write(bridge.rules_marker(), marks)?;
    let iptables = if docker_user {
        Some(Piped::spawn(
            Command::new("iptables-restore").args(["-w", "--noflush"]),
            &docker_user_rules(bridge, "-I"),
        )?)
    } else {
        None
    };
    let made = (|| -> anyhow::Result<()> {
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(bridge.name.clone()));
        link.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        nl.request(RouteNetlinkMessage::NewLink(link), NLM_F_CREATE | NLM_F_EXCL)
            .with_context(|| format!("cannot create the bridge {}", bridge.name))?;
        let index = nl.index(&bridge.name)?.context("the new bridge is not there")?;
        nl.add_address(index, bridge.gateway(), bridge.subnet.prefix_len())
            .with_context(|| format!("cannot give the bridge {} its address", bridge.name))?;
        nl.set_up(index)?;
        enable_forwarding()?;
        nft::Nfnl::open()?.add_masquerade_table(&bridge.nft_table(), bridge.subnet, &bridge.name)
    })();
    let added = iptables.map(Piped::wait).transpose();
    made?;
    added.context("cannot add the forwarding rules to DOCKER-USER (iptables-restore)")?;
    tracing::debug!(bridge = bridge.name, ms = started.elapsed().as_millis() as u64, "bridge and rules made");
    Ok(())
}

/// The `iptables-restore` input that inserts (`-I`) or deletes (`-D`) Berth's two DOCKER-USER
/// rules of the bridge (traffic from it, and replies to it), tagged `berth:<bridge>`: one text
/// for both, so a deletion always names exactly what was added.
fn docker_user_rules(bridge: &Bridge, op: &str) -> String {
    let name = &bridge.name;
    format!(
        "*filter\n{op} DOCKER-USER -i {name} -m comment --comment berth:{name} -j ACCEPT\n\
         {op} DOCKER-USER -o {name} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment berth:{name} -j ACCEPT\n\
         COMMIT\n"
    )
}

/// Switches IPv4 forwarding on (as docker does), unless it is on.
fn enable_forwarding() -> anyhow::Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    fs::write(PATH, "1").context("cannot switch on IPv4 forwarding")
}

fn remove_bridge_if_unused(bridge: &Bridge) -> anyhow::Result<()> {
    let in_use = fs::read_dir(bridge.leases()).map(|d| d.flatten().next().is_some()).unwrap_or(false);
    if in_use {
        return Ok(());
    }
    let started = std::time::Instant::now();
    // The DOCKER-USER rules' removal (a process) runs while the kernel deletes the bridge.
    let rules = RuleRemoval::start(bridge);
    let deleted = delete_link(&bridge.name);
    if let Some(rules) = rules {
        rules.finish(bridge);
    }
    tracing::debug!(bridge = bridge.name, ms = started.elapsed().as_millis() as u64, "bridge and rules removed");
    deleted
}

/// The removal of a bridge's rules, under way: the nft table and, through `iptables-restore`
/// with the exact `-D` lines of the rules added, Berth's DOCKER-USER rules.
struct RuleRemoval {
    /// What the marker said was added.
    docker_user: bool,
    /// The marker predates the record of what was added: look for DOCKER-USER rules.
    unrecorded: bool,
    iptables: Option<Piped>,
}

impl RuleRemoval {
    /// Starts removing the rules the marker says may exist (`None` without a marker).
    fn start(bridge: &Bridge) -> Option<RuleRemoval> {
        let marks = fs::read_to_string(bridge.rules_marker()).ok()?;
        let docker_user = marks.lines().any(|l| l == MARK_DOCKER_USER);
        let unrecorded = marks.trim().is_empty();
        let iptables = docker_user
            .then(|| {
                Piped::spawn(
                    Command::new("iptables-restore").args(["-w", "--noflush"]),
                    &docker_user_rules(bridge, "-D"),
                )
                .ok()
            })
            .flatten();
        Some(RuleRemoval { docker_user, unrecorded, iptables })
    }

    /// Deletes the nft table, waits for the DOCKER-USER rules' removal (looking the rules up
    /// and deleting them one by one if that failed, e.g. because one was already gone), and
    /// removes the marker.
    fn finish(self, bridge: &Bridge) {
        let table = bridge.nft_table();
        if let Err(e) = nft::Nfnl::open().and_then(|mut n| n.delete_table(&table)) {
            tracing::warn!(table, error = %e, "cannot delete the nft table over netlink: trying nft");
            let _ = Command::new("nft").args(["delete", "table", "ip", &table]).stderr(Stdio::null()).status();
        }
        let removed = self.iptables.map(Piped::wait);
        if self.unrecorded || (self.docker_user && !matches!(removed, Some(Ok(())))) {
            remove_docker_user_rules(bridge);
        }
        let _ = fs::remove_file(bridge.rules_marker());
    }
}

/// Finds Berth's DOCKER-USER rules of the bridge (tagged `berth:<bridge>`) in `iptables-save`
/// and deletes each with `iptables -D`.
fn remove_docker_user_rules(bridge: &Bridge) {
    let Ok(out) = Command::new("iptables-save").args(["-t", "filter"]).stderr(Stdio::null()).output() else { return };
    let tag = format!("berth:{}", bridge.name);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rule) = line.strip_prefix("-A DOCKER-USER ")
            && rule.split_whitespace().any(|w| w.trim_matches('"') == tag)
        {
            let mut args = vec!["-w".to_string(), "-D".into(), "DOCKER-USER".into()];
            args.extend(shell_words(rule));
            let _ = Command::new("iptables").args(&args).stderr(Stdio::null()).status();
        }
    }
}

/// `iptables-save`'s words (it quotes comments; Berth's have no spaces).
fn shell_words(s: &str) -> Vec<String> {
    s.split_whitespace().map(|w| w.trim_matches('"').to_string()).collect()
}

/// Whether docker's DOCKER-USER chain exists. With iptables-nft (docker's tables are nftables
/// tables) one read-only netlink question about `ip filter DOCKER-USER`; with iptables-legacy,
/// or if that question fails, `iptables -L`.
fn docker_user_chain_exists() -> bool {
    if !iptables_is_legacy() {
        match nft::Nfnl::open().and_then(|mut n| n.chain_exists("filter", "DOCKER-USER")) {
            Ok(exists) => return exists,
            Err(e) => tracing::debug!(error = %e, "cannot ask nftables for DOCKER-USER: asking iptables"),
        }
    }
    Command::new("iptables")
        .args(["-w", "-n", "-L", "DOCKER-USER"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the `iptables` on the PATH is iptables-legacy (x_tables, not nftables): Debian's
/// alternatives link it to `xtables-legacy-multi` or `xtables-nft-multi`.
fn iptables_is_legacy() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join("iptables"))
        .find(|p| p.exists())
        .and_then(|p| fs::canonicalize(p).ok())
        .is_some_and(|p| p.to_string_lossy().contains("legacy"))
}

/// A child process fed a script on its standard input, running while the caller goes on.
struct Piped {
    name: String,
    child: std::process::Child,
}

impl Piped {
    fn spawn(cmd: &mut Command, input: &str) -> anyhow::Result<Piped> {
        let name = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {name} (scripts/prereqs installs it)"))?;
        // The script is far below a pipe's buffer: this write does not wait for the child.
        let written = child.stdin.take().expect("piped").write_all(input.as_bytes());
        let piped = Piped { name, child };
        written.with_context(|| format!("cannot write to {}", piped.name))?;
        Ok(piped)
    }

    /// Waits for the process; its error output is the error.
    fn wait(self) -> anyhow::Result<()> {
        let out = self.child.wait_with_output()?;
        if !out.status.success() {
            bail!("{}: {}", self.name, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces and links.

fn create_netns(id: &str) -> anyhow::Result<()> {
    fs::create_dir_all(NETNS_DIR)?;
    let path = netns_path(id);
    File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let target = path.clone();
    std::thread::spawn(move || -> anyhow::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("cannot create a network namespace")?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .context("cannot keep the network namespace (bind mount)")?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

fn remove_netns(id: &str) {
    let path = netns_path(id);
    let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
    let _ = fs::remove_file(&path);
}

/// Runs `f` with a netlink socket inside the container's network namespace.
fn in_netns<T: Send + 'static>(
    id: &str,
    f: impl FnOnce(&mut Netlink) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let ns = File::open(netns_path(id)).context("cannot open the container's network namespace")?;
    std::thread::spawn(move || -> anyhow::Result<T> {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .context("cannot enter the container's network namespace")?;
        let mut nl = Netlink::open()?;
        f(&mut nl)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

/// The veth pair: `eth0` (in the namespace) with the address and the default route, the host
/// end on the bridge.
fn attach(id: &str, bridge: &Bridge, address: Ipv4Addr) -> anyhow::Result<()> {
    let host_end = veth_name(id);
    let ns = File::open(netns_path(id)).context("cannot open the container's network namespace")?;
    let mut nl = Netlink::open()?;
    let bridge_index = nl.index(&bridge.name)?.with_context(|| format!("the bridge {} is gone", bridge.name))?;
    let mut peer = LinkMessage::default();
    peer.attributes.push(LinkAttribute::IfName("eth0".into()));
    peer.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::IfName(host_end.clone()));
    link.attributes.push(LinkAttribute::Controller(bridge_index));
    link.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    nl.request(RouteNetlinkMessage::NewLink(link), NLM_F_CREATE | NLM_F_EXCL)
        .context("cannot create the container's veth pair")?;
    let index = nl.index(&host_end)?.context("the new veth is not there")?;
    nl.set_up(index)?;
    let (gateway, prefix) = (bridge.gateway(), bridge.subnet.prefix_len());
    in_netns(id, move |nl| {
        let lo = nl.index("lo")?.context("no lo")?;
        nl.set_up(lo)?;
        let eth0 = nl.index("eth0")?.context("eth0 did not arrive in the namespace")?;
        nl.add_address(eth0, address, prefix)?;
        nl.set_up(eth0)?;
        nl.add_default_route(eth0, gateway)
    })
    .context("cannot configure the container's eth0")
}

fn link_exists(name: &str) -> bool {
    Netlink::open().and_then(|mut nl| nl.index(name)).is_ok_and(|i| i.is_some())
}

/// Deletes a link if it exists.
fn delete_link(name: &str) -> anyhow::Result<()> {
    let mut nl = Netlink::open()?;
    let Some(index) = nl.index(name)? else { return Ok(()) };
    let mut link = LinkMessage::default();
    link.header.index = index;
    match nl.request(RouteNetlinkMessage::DelLink(link), 0) {
        Ok(()) => Ok(()),
        Err(e) if e.downcast_ref::<std::io::Error>().and_then(|e| e.raw_os_error()) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(e.context(format!("cannot delete {name}"))),
    }
}

/// A synchronous rtnetlink socket in the calling thread's network namespace.
struct Netlink {
    socket: netlink_sys::Socket,
    seq: u32,
}

impl Netlink {
    fn open() -> anyhow::Result<Netlink> {
        let mut socket =
            netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).context("cannot open a netlink socket")?;
        socket.bind_auto()?;
        Ok(Netlink { socket, seq: 0 })
    }

    fn send(&mut self, message: RouteNetlinkMessage, flags: u16) -> anyhow::Result<u32> {
        self.seq += 1;
        let mut req = NetlinkMessage::from(message);
        req.header.flags = NLM_F_REQUEST | flags;
        req.header.sequence_number = self.seq;
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.socket.send(&buf, 0).context("netlink send")?;
        Ok(self.seq)
    }

    /// Receives the answers to request `seq` until its ACK, error, or (with `want_reply`) the
    /// first reply message.
    fn receive(&mut self, seq: u32) -> anyhow::Result<Option<RouteNetlinkMessage>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut buf[..], 0).context("netlink receive")?;
            let mut offset = 0;
            while offset < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..n])
                    .map_err(|e| anyhow::anyhow!("netlink: undecodable answer: {e}"))?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number == seq {
                    match msg.payload {
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(None),
                                Some(code) => Err(std::io::Error::from_raw_os_error(-code.get()).into()),
                            };
                        }
                        NetlinkPayload::InnerMessage(m) => return Ok(Some(m)),
                        NetlinkPayload::Done(_) => return Ok(None),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    /// A request answered by an ACK.
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> anyhow::Result<()> {
        let seq = self.send(message, flags | NLM_F_ACK)?;
        self.receive(seq).map(|_| ())
    }

    /// The index of the link `name`, if it exists.
    fn index(&mut self, name: &str) -> anyhow::Result<Option<u32>> {
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(name.to_string()));
        let seq = self.send(RouteNetlinkMessage::GetLink(link), 0)?;
        match self.receive(seq) {
            Ok(Some(RouteNetlinkMessage::NewLink(l))) => Ok(Some(l.header.index)),
            Ok(_) => Ok(None),
            Err(e) if e.downcast_ref::<std::io::Error>().and_then(|e| e.raw_os_error()) == Some(libc::ENODEV) => {
                Ok(None)
            }
            Err(e) => Err(e.context(format!("cannot look up the link {name}"))),
        }
    }

    fn set_up(&mut self, index: u32) -> anyhow::Result<()> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = LinkFlags::Up;
        link.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(link), 0).context("cannot set a link up")
    }

    fn add_address(&mut self, index: u32, address: Ipv4Addr, prefix: u8) -> anyhow::Result<()> {
        let net = Ipv4Net::new(address, prefix)?;
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(address)));
        msg.attributes.push(AddressAttribute::Address(IpAddr::V4(address)));
        msg.attributes.push(AddressAttribute::Broadcast(net.broadcast()));
        self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL)
            .with_context(|| format!("cannot add the address {net}"))
    }

    fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> anyhow::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        msg.attributes.push(RouteAttribute::Oif(index));
        self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL)
            .with_context(|| format!("cannot add the default route via {gateway}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridges_and_subnets_are_checked() {
        let b = Bridge::from_config("berth0", "10.89.0.0/24").unwrap();
        assert_eq!(b.gateway(), Ipv4Addr::new(10, 89, 0, 1));
        assert_eq!(Bridge::from_config("b", "10.1.2.3/16").unwrap().subnet.to_string(), "10.1.0.0/16");
        assert!(Bridge::from_config("a-very-long-bridge-name", "10.89.0.0/24").is_err());
        assert!(Bridge::from_config("berth0", "10.89.0.0/30").is_err());
        assert!(Bridge::from_config("berth0", "fd00::/64").is_err());
        assert_eq!(Mode::parse("bridge").unwrap(), Mode::Bridge);
        assert!(Mode::parse("container:x").is_err());
    }

    #[test]
    fn hosts_name_the_container_at_its_address() {
        let h = hosts_file("abc", Some("web"), Some(Ipv4Addr::new(10, 89, 0, 2)));
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.89.0.2\tabc web\n"), "{h}");
        assert!(hosts_file("abc", None, None).ends_with("127.0.1.1\tabc\n"));
    }
}
