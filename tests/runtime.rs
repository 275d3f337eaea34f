//! End-to-end tests of the bundled runtime (`berth run`, `ps`, `stop`, `rm`, `start`, `logs`,
//! `images`, `volume`): real berth servers, images pushed by the docker engine or through the
//! registry API, and `berth <cmd> --data-dir <the server's data dir>` run while the server runs.
//!
//! Needs root, the docker engine, Debian's `busybox-static`, `curl`, `tmux` and `gcc` with a
//! static C library (`libc6-dev`), which builds the probe of the hardening tests.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::docker::{self, Images};
use common::images::{OCI_CONFIG, OCI_LAYER, OCI_LAYER_GZIP, OCI_MANIFEST, gzip};
use common::registry::Reg;
use common::{Berth, run, sha256};
use reqwest::StatusCode;
use serde_json::json;

fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

/// `berth --data-dir D ARGS` on the server's data dir (with its backend's environment).
fn rt(b: &Berth, args: &[&str]) -> Output {
    rt_cmd(b, args).stdin(Stdio::null()).output().expect("run berth")
}

fn rt_cmd(b: &Berth, args: &[&str]) -> Command {
    let mut cmd = Command::new(berth_bin());
    cmd.arg("--data-dir").arg(&b.data_dir).args(args).env_remove("BERTH_LOG").env_remove("RUST_BACKTRACE");
    cmd.envs(b.backend().env().iter().map(|(k, v)| (k, v)));
    cmd
}

/// Like [`rt`], panicking unless it succeeds; returns stdout.
fn rt_ok(b: &Berth, args: &[&str]) -> String {
    succeeded(args, rt(b, args))
}

/// stdout of a berth command that must have succeeded (else a panic with its output).
fn succeeded(args: &[&str], out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "berth {args:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A busybox image with every applet, imported into the local docker engine as `name`.
fn import_busybox_full(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    for dir in ["bin", "tmp", "etc", "root", "data"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy /bin/busybox");
    let list = run(Command::new("/bin/busybox").arg("--list"));
    for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
        .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    let tarball = tmp.path().join("rootfs.tar");
    run(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tarball).arg("."));
    run(Command::new("docker").arg("import").arg("--change").arg("CMD [\"sh\"]").arg(&tarball).arg(name));
}

/// A server holding a busybox image pushed by the docker engine; returns the server, the
/// image's name in the store and the local images to clean up.
fn server_with_busybox(what: &str) -> (Berth, String, Images) {
    docker::require_tools();
    let b = Berth::start();
    let mut images = Images::new();
    let local = images.add(format!("local/rt-busybox-{}-{what}:latest", b.port));
    import_busybox_full(&local);
    let repo = format!("rt/{what}");
    let remote = images.add(format!("{}/{repo}:latest", b.host()));
    docker::docker(&["tag", &local, &remote]);
    docker::push(&remote);
    (b, repo, images)
}

/// Whether anything is mounted under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = dir.display().to_string();
    info.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&prefix)).map(String::from).collect()
}

fn containers_dir(b: &Berth) -> PathBuf {
    b.data_dir.join("runtime/containers")
}

#[test]
fn run_prints_and_exits_with_the_containers_status() {
    let (b, img, _images) = server_with_busybox("echo");
    let out = rt(&b, &["run", "--rm", &img, "echo", "hello"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\n");

    let out = rt(&b, &["run", "--rm", &img, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let out = rt(&b, &["run", "--rm", &img, "sh", "-c", "echo to-stderr >&2; exit 42"]);
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(text(&out.stderr), "to-stderr\n");

    // The image's CMD when none is given; stdin with -i.
    let mut child =
        rt_cmd(&b, &["run", "--rm", "-i", &img]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"echo from-stdin; exit 4\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(text(&out.stdout), "from-stdin\n");

    // Everything after the image is the command's, as with docker, also what looks like run's
    // own flags.
    assert_eq!(rt_ok(&b, &["run", "--rm", &img, "echo", "--rm", "-e", "X"]), "--rm -e X\n");
    let out = rt(&b, &["run", "--rm", &img, "--help"]);
    assert_eq!(out.status.code(), Some(127), "the image's --help, not berth's: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains(r#"container command "--help" not found"#), "{}", text(&out.stderr));

    // Flags that shape the process.
    let out = rt_ok(
        &b,
        &[
            "run",
            "--rm",
            "-e",
            "FOO=bar",
            "-w",
            "/tmp",
            "--hostname",
            "boxy",
            "--entrypoint",
            "sh",
            &img,
            "-c",
            "echo $FOO $(pwd) $(hostname) $(grep boxy /etc/hosts | cut -f2)",
        ],
    );
    assert_eq!(out, "bar /tmp boxy boxy\n");
    // PID namespace: the command is PID 1.
    assert_eq!(rt_ok(&b, &["run", "--rm", &img, "sh", "-c", "echo $$"]), "1\n");
    // --network none: only the loopback interface.
    let none = rt_ok(&b, &["run", "--rm", "--network", "none", &img, "cat", "/proc/net/dev"]);
    let ifaces: Vec<&str> = none.lines().skip(2).map(|l| l.trim().split(':').next().unwrap()).collect();
    assert_eq!(ifaces, ["lo"], "{none}");

    // Errors are clear and nothing is left behind.
    let out = rt(&b, &["run", "--rm", "rt/not-there", "true"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not in the store"), "{}", text(&out.stderr));
    let out = rt(&b, &["run", "--rm", &img, "/no/such/binary"]);
    assert!(!out.status.success());
    assert!(std::fs::read_dir(containers_dir(&b)).unwrap().next().is_none(), "--rm containers left behind");
    assert!(mounts_under(&b.data_dir).is_empty());
}

#[test]
fn memory_and_pid_limits_reach_the_cgroup() {
    let (b, img, _images) = server_with_busybox("limits");
    let id = rt_ok(&b, &["run", "-d", "--memory", "64m", "--pids-limit", "20", &img, "sleep", "1000"]);
    let id = id.trim().to_string();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(containers_dir(&b).join(&id).join("container.json")).unwrap()).unwrap();
    let pid = record["pid"].as_i64().expect("a running container has a pid");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path_of = |controller: &str| {
        cgroups.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            ctrls.split(',').any(|c| c == controller).then(|| path.to_string())
        })
    };
    let (memory, pids) = match (path_of("memory"), path_of("pids")) {
        (Some(m), Some(p)) => (
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory{m}/memory.limit_in_bytes")).unwrap(),
            std::fs::read_to_string(format!("/sys/fs/cgroup/pids{p}/pids.max")).unwrap(),
        ),
        _ => {
            let v2 = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap().to_string();
            (
                std::fs::read_to_string(format!("/sys/fs/cgroup{v2}/memory.max")).unwrap(),
                std::fs::read_to_string(format!("/sys/fs/cgroup{v2}/pids.max")).unwrap(),
            )
        }
    };
    assert_eq!(memory.trim(), (64u64 << 20).to_string());
    assert_eq!(pids.trim(), "20");
    rt_ok(&b, &["rm", "-f", &id]);
    assert!(rt(&b, &["run", "--rm", "--memory", "lots", &img, "true"]).status.code() != Some(0));
}

// ---- images built through the registry API --------------------------------------------------

/// A tar layer from (path, kind) entries; `kind` is file contents, a dir, a symlink or hardlink.
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    /// A file without execute permission (0644).
    Plain(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// Writes a raw header name (the tar crate's setters refuse `..` and absolute paths).
fn raw_name(h: &mut tar::Header, name: &str) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

/// A tar of crafted entries, names and link targets written raw (so also unsafe ones: `..`,
/// absolute paths, links out of the root), as a hostile or careless image could hold them.
fn tar_of_entries(entries: &[Entry]) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut t = tar::Builder::new(&mut bytes);
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(1_700_000_000);
            match e {
                Entry::File(name, data) | Entry::Plain(name, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    h.set_mode(if matches!(e, Entry::Plain(..)) { 0o644 } else { 0o755 });
                    raw_name(&mut h, name);
                    h.set_cksum();
                    t.append(&h, *data).unwrap();
                }
                Entry::Dir(name) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    raw_name(&mut h, name);
                    h.set_cksum();
                    t.append(&h, std::io::empty()).unwrap();
                }
                Entry::Symlink(name, target) | Entry::Hardlink(name, target) => {
                    h.set_entry_type(if matches!(e, Entry::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    h.set_size(0);
                    h.set_mode(0o777);
                    raw_name(&mut h, name);
                    h.set_link_name_literal(target).unwrap();
                    h.set_cksum();
                    t.append(&h, std::io::empty()).unwrap();
                }
            }
        }
        t.finish().unwrap();
    }
    bytes
}

/// Pushes, as `repo:latest`, an OCI image `berth run` can run: the given layers (plain or gzip
/// tars) and a config with their diff ids and `sh` as its command.
fn push_runnable(b: &Berth, repo: &str, layers: &[(Vec<u8>, bool)]) {
    common::block_on(async {
        let reg = Reg::new(b);
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, compress) in layers {
            diff_ids.push(sha256(tar));
            let (blob, media) = if *compress { (gzip(tar), OCI_LAYER_GZIP) } else { (tar.clone(), OCI_LAYER) };
            let digest = reg.blob(repo, &blob).await;
            descriptors.push(json!({"mediaType": media, "digest": digest, "size": blob.len()}));
        }
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let config_digest = reg.blob(repo, &config).await;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))
        .unwrap();
        let r = reg.put_manifest(repo, "latest", OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{repo}:latest: {}", r.text().await.unwrap());
    })
}

/// A base layer with busybox (`sh`, `ls`, `cat`, `test`, `echo`, `grep`, `id`, `touch`, `head`,
/// `mkdir`).
fn busybox_layer(extra: &[Entry]) -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (apt-get install busybox-static)");
    let mut entries = vec![Entry::Dir("bin/"), Entry::File("bin/busybox", &busybox)];
    for applet in ["sh", "ls", "cat", "test", "echo", "grep", "id", "touch", "head", "mkdir"] {
        entries.push(Entry::Symlink(Box::leak(format!("bin/{applet}").into_boxed_str()), "busybox"));
    }
    entries.extend(extra.iter().map(|e| match e {
        Entry::File(a, b) => Entry::File(a, b),
        Entry::Plain(a, b) => Entry::Plain(a, b),
        Entry::Dir(a) => Entry::Dir(a),
        Entry::Symlink(a, b) => Entry::Symlink(a, b),
        Entry::Hardlink(a, b) => Entry::Hardlink(a, b),
    }));
    tar_of_entries(&entries)
}

/// `berth run` exits as docker does: 125 when Berth itself fails (bad flag or argument, image
/// not in the store), 126 when the command cannot be invoked, 127 when it is not in the image,
/// the container's own status otherwise; a failure is one readable line.
#[test]
fn run_exit_codes_follow_docker() {
    let b = Berth::start();
    let layer = busybox_layer(&[
        Entry::Dir("adir/"),
        Entry::Plain("notes.txt", b"just text\n"),
        Entry::Symlink("bin/dangling", "/nowhere"),
        Entry::Symlink("bin/notes", "../notes.txt"),
    ]);
    push_runnable(&b, "rt/codes", &[(layer, true)]);
    let img = "rt/codes";
    let host = tempfile::tempdir().unwrap();
    std::fs::set_permissions(host.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(host.path().join("plain.txt"), "text\n").unwrap();
    std::fs::write(host.path().join("ok.sh"), "#!/bin/sh\necho from-volume\n").unwrap();
    std::fs::set_permissions(host.path().join("ok.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let vol = format!("{}:/tools:ro", host.path().display());

    // (arguments, exit status, what stderr says; one line unless it is clap's usage message)
    let cases: Vec<(Vec<&str>, i32, &str, bool)> = vec![
        // 127: not in the image (by path, in PATH, a dangling link).
        (vec!["run", "--rm", img, "/nope"], 127, r#"berth: container command "/nope" not found in the image"#, true),
        (vec!["run", "--rm", img, "nope"], 127, r#"container command "nope" not found"#, true),
        (vec!["run", "--rm", img, "dangling"], 127, "not found", true),
        (vec!["run", "--rm", img, "/adir/nope"], 127, "not found", true),
        // 126: there, but not something to execute.
        (
            vec!["run", "--rm", img, "/adir"],
            126,
            r#"container command "/adir" cannot be invoked: it is a directory"#,
            true,
        ),
        (vec!["run", "--rm", img, "/notes.txt"], 126, "cannot be invoked: it is not executable", true),
        (vec!["run", "--rm", img, "notes"], 126, "cannot be invoked", true),
        (vec!["run", "--rm", "-w", "/", img, "./notes.txt"], 126, "cannot be invoked", true),
        (vec!["run", "--rm", "--entrypoint", "/adir", img], 126, "cannot be invoked", true),
        // Under a volume the runtime decides; its refusal maps the same way.
        (vec!["run", "--rm", "-v", &vol, img, "/tools/missing"], 127, "not found", true),
        (vec!["run", "--rm", "-v", &vol, img, "/tools/plain.txt"], 126, "cannot be invoked", true),
        // The container's own status, whatever it is.
        (vec!["run", "--rm", img, "sh", "-c", "exit 126"], 126, "", false),
        (vec!["run", "--rm", img, "sh", "-c", "exit 125"], 125, "", false),
        (vec!["run", "--rm", img, "sh", "-c", "nope"], 127, "nope: not found", false),
        // 125: Berth's own failures.
        (vec!["run", "--rm", "rt/not-there", "true"], 125, "not in the store", true),
        (vec!["run", "--rm", "--network", "container:x", img, "true"], 125, "is not supported", true),
        (vec!["run", "--rm", "-m", "lots", img, "true"], 125, "berth: ", true),
        (vec!["run", "--rm", "--no-such-flag", img, "true"], 125, "--no-such-flag", false),
        (vec!["run"], 125, "IMAGE", false),
        (vec!["--config=/nonexistent.toml", "run", "--bogus"], 125, "--bogus", false),
        (vec!["start", "--bogus", "x"], 125, "--bogus", false),
        (vec!["ps", "--bogus"], 125, "--bogus", false),
        (vec!["start", "no-such-container"], 125, "no such container", true),
    ];
    for (args, code, says, one_line) in &cases {
        let out = rt(&b, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "berth {args:?}: {stderr}");
        assert!(stderr.contains(says), "berth {args:?}: {stderr}");
        if *one_line {
            assert_eq!(stderr.lines().count(), 1, "berth {args:?}: one line, not\n{stderr}");
        }
    }
    // The volume's own executable runs.
    assert_eq!(rt_ok(&b, &["run", "--rm", "-v", &vol, img, "/tools/ok.sh"]), "from-volume\n");
    // Clap's own statuses stay for help and version.
    assert_eq!(rt(&b, &["run", "--help"]).status.code(), Some(0));
    assert_eq!(rt(&b, &["--version"]).status.code(), Some(0));
    // The registry's commands keep clap's usage status.
    assert_eq!(rt(&b, &["user", "--bogus"]).status.code(), Some(2));

    // Detached: the same statuses; the container stays (no --rm), created but never run.
    let out = rt(&b, &["run", "-d", "--name", "never-ran", img, "/nope"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not found in the image"), "{}", text(&out.stderr));
    let out = rt(&b, &["start", "never-ran"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    let out = rt(&b, &["start", "-a", "never-ran"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    rt_ok(&b, &["rm", "never-ran"]);
    // Detached with --rm: the container is gone, the status and the reason are not.
    let out = rt(&b, &["run", "-d", "--rm", img, "/adir"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).lines().count(), 1, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("it is a directory"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "no container id for a container that never ran");
    // A detached container that runs and exits at once with such a status is no failure.
    let out = rt(&b, &["run", "-d", "--rm", img, "sh", "-c", "exit 127"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(containers_dir(&b)).unwrap().next().is_some() {
        assert!(Instant::now() < deadline, "containers left behind");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(mounts_under(&b.data_dir).is_empty());
}

#[test]
fn whiteouts_delete_files_and_opaque_directories_replace() {
    let b = Berth::start();
    let lower = busybox_layer(&[
        Entry::Dir("d/"),
        Entry::File("d/old", b"old"),
        Entry::Dir("d/sub/"),
        Entry::File("d/sub/deep", b"deep"),
        Entry::File("gone", b"gone"),
        Entry::File("keep", b"keep"),
    ]);
    let upper = tar_of_entries(&[
        Entry::File(".wh.gone", b""),
        Entry::Dir("d/"),
        Entry::File("d/.wh..wh..opq", b""),
        Entry::File("d/new", b"new"),
    ]);
    push_runnable(&b, "rt/layers", &[(lower, false), (upper, true)]);
    let out = rt_ok(
        &b,
        &["run", "--rm", "rt/layers", "sh", "-c", "ls -A /d; test -e /gone && echo gone-present; cat /keep /d/new"],
    );
    assert_eq!(out, "new\nkeepnew");

    // The same through private copies (no overlay).
    let out =
        rt_cmd(&b, &["run", "--rm", "rt/layers", "sh", "-c", "ls -A /d; test -e /gone && echo gone-present; true"])
            .env("BERTH_RUNTIME_NO_OVERLAY", "1")
            .output()
            .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "new\n");
    assert!(text(&out.stderr).contains("overlayfs is not available"), "{}", text(&out.stderr));
}

#[test]
fn hostile_layers_are_rejected_and_nothing_is_written_outside() {
    let b = Berth::start();
    let tag = format!("berth-rt-{}", b.port);
    let passwd_links = std::fs::metadata("/etc/passwd").map(|m| std::os::unix::fs::MetadataExt::nlink(&m)).unwrap();
    let abs_dir = format!("/{tag}-abs");
    let etc_file = format!("etcx/{tag}");
    let abs_path = format!("{abs_dir}/path");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            busybox_layer(&[Entry::File("../escape", b"x"), Entry::File("../../../../../../tmp/escape2", b"x")]),
        ),
        ("absolute", busybox_layer(&[Entry::File(&abs_path, b"x")])),
        ("symlink", busybox_layer(&[Entry::Symlink("etcx", "/etc"), Entry::File(&etc_file, b"x")])),
        ("hardlink", busybox_layer(&[Entry::Hardlink("passwd", "/etc/passwd")])),
        ("hardlink-dotdot", busybox_layer(&[Entry::Hardlink("passwd", "../../../../../../../../etc/passwd")])),
        (
            "hardlink-through-symlink",
            busybox_layer(&[Entry::Symlink("etcy", "/etc"), Entry::Hardlink("passwd", "etcy/passwd")]),
        ),
    ];
    for (what, layer) in cases {
        let repo = format!("rt/hostile-{what}");
        push_runnable(&b, &repo, &[(layer, true)]);
        let out = rt(&b, &["run", "--rm", &repo, "true"]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{what}: a hostile layer ran");
        assert!(err.contains("rejected") && err.contains("unsafe layer entry"), "{what}: unclear error: {err}");
    }
    let runtime = b.data_dir.join("runtime");
    for p in [
        runtime.join("escape"),
        runtime.join("layers/escape"),
        b.data_dir.join("escape"),
        PathBuf::from("/tmp/escape2"),
        PathBuf::from(&abs_dir),
        PathBuf::from(format!("/etc/{tag}")),
    ] {
        assert!(!p.exists(), "{} was written", p.display());
    }
    let links_after = std::fs::metadata("/etc/passwd").map(|m| std::os::unix::fs::MetadataExt::nlink(&m)).unwrap();
    assert_eq!(passwd_links, links_after, "/etc/passwd gained a hardlink");
    // Rejected layers leave nothing in the cache, and no container.
    assert_eq!(std::fs::read_dir(runtime.join("layers")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(containers_dir(&b)).unwrap().count(), 0);
}

// ---- containers -----------------------------------------------------------------------------

#[test]
fn the_container_layer_lives_and_dies_with_its_container() {
    let (b, img, _images) = server_with_busybox("layer");
    let script = "cat /tmp/own 2>/dev/null; echo mine > /tmp/own";
    assert_eq!(rt_ok(&b, &["run", "--name", "first", &img, "sh", "-c", script]), "");
    // A new container does not see it.
    let out = rt(&b, &["run", "--rm", &img, "cat", "/tmp/own"]);
    assert_eq!(out.status.code(), Some(1));
    // `start` of the stopped container (the latest one) runs on its own layer again.
    let latest = rt_ok(&b, &["ps", "-a", "-q", "-l"]).trim().to_string();
    assert_eq!(latest.len(), 12);
    let full = rt_ok(&b, &["ps", "-a", "-q", "--no-trunc"]);
    let id = full.lines().find(|l| l.starts_with(&latest)).unwrap().to_string();
    assert!(id.len() == 64 && id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
    let mut child =
        rt_cmd(&b, &["start", "-a", "-i", &latest]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "mine\n");
    let upper = containers_dir(&b).join(&id).join("upper/tmp/own");
    assert!(upper.exists(), "the write is in the container's own layer");
    // rm deletes the layer; nothing of it survives.
    assert_eq!(rt_ok(&b, &["rm", "first"]).trim(), "first");
    assert!(!containers_dir(&b).join(&id).exists());
    assert_eq!(rt(&b, &["run", "--rm", &img, "cat", "/tmp/own"]).status.code(), Some(1));
    assert!(rt(&b, &["start", "-a", &id]).status.code() != Some(0), "start of a removed container");
    assert!(mounts_under(&b.data_dir).is_empty(), "{:?}", mounts_under(&b.data_dir));
    // The layer cache holds the image's one layer, shared by all those containers.
    assert_eq!(std::fs::read_dir(b.data_dir.join("runtime/layers")).unwrap().count(), 1);
}

#[test]
fn volumes_outlive_containers_and_read_only_binds_refuse_writes() {
    let (b, img, _images) = server_with_busybox("volumes");
    rt_ok(&b, &["run", "--name", "writer", "-v", "rtdata:/data", &img, "sh", "-c", "echo persisted > /data/f"]);
    rt_ok(&b, &["rm", "writer"]);
    assert_eq!(rt_ok(&b, &["run", "--rm", "-v", "rtdata:/data", &img, "cat", "/data/f"]), "persisted\n");
    assert!(rt_ok(&b, &["volume", "ls", "-q"]).lines().any(|l| l == "rtdata"));

    // A volume in use cannot be removed; once its container is gone it can.
    rt_ok(&b, &["run", "--name", "user", "-v", "rtdata:/data", &img, "true"]);
    let out = rt(&b, &["volume", "rm", "rtdata"]);
    assert!(!out.status.success() && text(&out.stderr).contains("in use"), "{}", text(&out.stderr));
    rt_ok(&b, &["rm", "user"]);
    rt_ok(&b, &["volume", "rm", "rtdata"]);
    assert!(!rt_ok(&b, &["volume", "ls", "-q"]).lines().any(|l| l == "rtdata"));

    // Bind mounts: read-write shows on the host, read-only refuses.
    let host = tempfile::tempdir().unwrap();
    let h = host.path().display().to_string();
    rt_ok(&b, &["run", "--rm", "-v", &format!("{h}:/host"), &img, "sh", "-c", "echo rw > /host/written"]);
    assert_eq!(std::fs::read_to_string(host.path().join("written")).unwrap(), "rw\n");
    let out = rt(&b, &["run", "--rm", "-v", &format!("{h}:/host:ro"), &img, "sh", "-c", "echo no > /host/refused"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Read-only file system"), "{}", text(&out.stderr));
    assert!(!host.path().join("refused").exists());
    assert_eq!(rt_ok(&b, &["run", "--rm", "-v", &format!("{h}:/host:ro"), &img, "cat", "/host/written"]), "rw\n");
    // Bad volume specifications are refused clearly.
    let out = rt(&b, &["run", "--rm", "-v", "relative/path:/x", &img, "true"]);
    assert!(!out.status.success() && text(&out.stderr).contains("invalid volume"), "{}", text(&out.stderr));
}

#[test]
fn ps_stop_rm_logs_and_detached_runs() {
    let (b, img, _images) = server_with_busybox("ps");
    let id = rt_ok(&b, &["run", "-d", "--name", "sleeper", &img, "sleep", "1000"]).trim().to_string();
    assert!(id.len() == 64 && id.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(rt_ok(&b, &["ps", "-q"]).trim(), &id[..12]);
    assert!(rt_ok(&b, &["ps"]).contains("Up "));
    // Removing a running container needs -f.
    let out = rt(&b, &["rm", "sleeper"]);
    assert!(!out.status.success() && text(&out.stderr).contains("is running"), "{}", text(&out.stderr));

    // sleep as PID 1 ignores SIGTERM: stop kills it after the timeout.
    let t = Instant::now();
    assert_eq!(rt_ok(&b, &["stop", "-t", "1", &id[..8]]).trim(), &id[..8]);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(8), "stop took {took:?}");
    assert_eq!(rt_ok(&b, &["ps", "-q"]), "");
    let all = rt_ok(&b, &["ps", "-a"]);
    assert!(all.contains("Exited (137)") && all.contains("sleeper"), "{all}");

    // logs: both streams, from a detached container.
    let lid = rt_ok(&b, &["run", "-d", "--name", "talker", &img, "sh", "-c", "echo out-line; echo err-line >&2"]);
    let lid = lid.trim();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rt_ok(&b, &["ps", "-a"]).lines().any(|l| l.contains("talker") && l.contains("Exited (0)")) {
        assert!(Instant::now() < deadline, "the detached container did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = rt(&b, &["logs", "talker"]);
    assert_eq!(text(&out.stdout), "out-line\n");
    assert_eq!(text(&out.stderr), "err-line\n");
    assert_eq!(rt_ok(&b, &["ps", "-a", "-q", "-l"]).trim(), &lid[..12]);

    // rm -f of a running container.
    let id2 = rt_ok(&b, &["run", "-d", &img, "sleep", "1000"]).trim().to_string();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(containers_dir(&b).join(&id2).join("container.json")).unwrap()).unwrap();
    let pid = record["pid"].as_i64().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    rt_ok(&b, &["rm", "-f", &id2[..10]]);
    assert!(!rt_ok(&b, &["ps", "-a", "-q", "--no-trunc"]).contains(&id2));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the container's process survived rm -f");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Unknown and ambiguous names are clear errors; names are unique.
    let out = rt(&b, &["stop", "nonexistent"]);
    assert!(text(&out.stderr).contains("no such container"), "{}", text(&out.stderr));
    let out = rt(&b, &["run", "--name", "talker", &img, "true"]);
    assert!(text(&out.stderr).contains("already in use"), "{}", text(&out.stderr));
    rt_ok(&b, &["rm", "sleeper", "talker"]);
    assert_eq!(rt_ok(&b, &["ps", "-a", "-q"]), "");
    assert!(mounts_under(&b.data_dir).is_empty());
}

/// `tmux capture-pane` of the session.
fn pane(session: &str) -> String {
    run(Command::new("tmux").args(["capture-pane", "-p", "-t", session]))
}

fn wait_for_pane(session: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = pane(session);
        if p.contains(what) {
            return p;
        }
        assert!(Instant::now() < deadline, "{what:?} never appeared in the terminal:\n{p}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Tmux(String);

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.0]).output();
    }
}

#[test]
fn interactive_tty_under_tmux() {
    let (b, img, _images) = server_with_busybox("tty");
    let session = format!("berth-rt-{}", b.port);
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new("tmux").args(["new-session", "-d", "-s", &session, "-x", "100", "-y", "30", "sh"]));
    let _guard = Tmux(session.clone());
    let send = |keys: &str| run(Command::new("tmux").args(["send-keys", "-t", &session, keys, "Enter"]));
    let before = tmp.path().join("before");
    let after = tmp.path().join("after");
    send(&format!("stty -g > {}", before.display()));
    let mut env = String::new();
    for (k, v) in b.backend().env() {
        env.push_str(&format!("{k}='{v}' "));
    }
    send(&format!("{env}{} --data-dir {} run -it --rm {img} sh; echo EXIT=$?", berth_bin(), b.data_dir.display()));
    wait_for_pane(&session, "/ #");
    send("echo hi; exit");
    let p = wait_for_pane(&session, "EXIT=0");
    assert!(p.lines().any(|l| l.trim_end() == "hi"), "{p}");
    // The terminal is back in its previous mode.
    // (The quotes keep the typed command line from matching what it prints.)
    send(&format!("stty -g > {}; echo SAV''ED", after.display()));
    wait_for_pane(&session, "SAVED");
    assert_eq!(std::fs::read_to_string(&before).unwrap(), std::fs::read_to_string(&after).unwrap());
}

#[test]
fn images_from_another_registry_are_pulled_first() {
    let (source, img, _images) = server_with_busybox("remote");
    let b = Berth::start();
    let remote = format!("{}/{img}:latest", source.host());
    let out = rt(&b, &["run", "--rm", &remote, "echo", "pulled"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "pulled\n");
    // Now in this server's store, so it runs without the source.
    drop(source);
    assert_eq!(rt_ok(&b, &["run", "--rm", &remote, "echo", "again"]), "again\n");
    let images = rt_ok(&b, &["images"]);
    let local = format!("127.0.0.1-{}/{img}", remote.split(':').nth(1).unwrap().split('/').next().unwrap());
    assert!(images.lines().any(|l| l.starts_with(&local) && l.contains("1/1")), "{images}");
}

#[test]
fn signals_reach_the_container_and_stop_sends_sigterm_first() {
    let (b, img, _images) = server_with_busybox("signals");
    // `berth run` in the foreground becomes the monitor: a SIGTERM to it goes to the container.
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done";
    let mut child = rt_cmd(&b, &["run", "--rm", &img, "sh", "-c", script]).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 6];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    assert_eq!(&first, b"ready\n");
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(7));

    // stop: a container that handles SIGTERM exits on it, well before the timeout.
    let id = rt_ok(&b, &["run", "-d", &img, "sh", "-c", script]).trim().to_string();
    // Until its trap is set, the shell (PID 1 of its namespace) would ignore the SIGTERM.
    assert!(
        common::eventually_blocking(20, || text(&rt(&b, &["logs", &id]).stdout).contains("ready")),
        "the detached container never said ready"
    );
    let t = Instant::now();
    rt_ok(&b, &["stop", "-t", "20", &id]);
    assert!(t.elapsed() < Duration::from_secs(10), "stop waited for the timeout");
    assert!(rt_ok(&b, &["ps", "-a"]).contains("Exited (7)"));
    let out = rt(&b, &["logs", &id]);
    assert_eq!(text(&out.stdout), "ready\ngot-term\n");
}

#[test]
fn concurrent_runs_share_one_unpacked_layer() {
    let (b, img, _images) = server_with_busybox("concurrent");
    let children: Vec<_> = (0..6)
        .map(|i| {
            rt_cmd(&b, &["run", "--rm", &img, "echo", &format!("run-{i}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "run {i}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("run-{i}\n"));
    }
    let layers: Vec<_> =
        std::fs::read_dir(b.data_dir.join("runtime/layers")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(layers.len(), 1, "one cached layer, no leftovers: {layers:?}");
    assert_eq!(std::fs::read_dir(containers_dir(&b)).unwrap().count(), 0);
}

#[test]
fn a_container_whose_monitor_died_is_recovered() {
    let (b, img, _images) = server_with_busybox("stale");
    let id = rt_ok(&b, &["run", "-d", "--name", "orphan", &img, "sleep", "1000"]).trim().to_string();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(containers_dir(&b).join(&id).join("container.json")).unwrap()).unwrap();
    let monitor = record["monitor_pid"].as_i64().unwrap();
    let pid = record["pid"].as_i64().unwrap();
    assert_eq!(mounts_under(&b.data_dir).len(), 1);
    run(Command::new("kill").args(["-KILL", &monitor.to_string()]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{monitor}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        assert!(Instant::now() < deadline, "the monitor did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The next command notices: exited, the container's process ended, the root unmounted.
    let ps = rt_ok(&b, &["ps", "-a"]);
    assert!(ps.lines().any(|l| l.contains("orphan") && l.contains("Exited")), "{ps}");
    assert!(mounts_under(&b.data_dir).is_empty(), "{:?}", mounts_under(&b.data_dir));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        assert!(Instant::now() < deadline, "the container's process survived");
        std::thread::sleep(Duration::from_millis(20));
    }
    // And it can run again.
    let mut child = rt_cmd(&b, &["start", "-a", "orphan"]).spawn().unwrap();
    // `stop` leaves a container that is not running yet alone: wait until it runs.
    assert!(
        common::eventually_blocking(20, || rt_ok(&b, &["ps", "-q"]).contains(&id[..12])),
        "the restarted container is not running"
    );
    rt_ok(&b, &["stop", "-t", "0", "orphan"]);
    assert_eq!(child.wait().unwrap().code(), Some(137));
    rt_ok(&b, &["rm", "orphan"]);
}

#[test]
fn pulls_use_the_credentials_in_dockers_config() {
    docker::require_tools();
    let source = Berth::start_auth();
    let client = docker::DockerClient::new(&source.host());
    assert!(client.login("admin", common::ADMIN_PASSWORD).status.success());
    let mut images = Images::new();
    let local = images.add(format!("local/rt-busybox-{}-auth:latest", source.port));
    import_busybox_full(&local);
    let remote = images.add(format!("{}/rt/private:latest", source.host()));
    docker::docker(&["tag", &local, &remote]);
    client.run(&["push", &remote]);

    let b = Berth::start();
    // Without credentials the source refuses.
    let empty = tempfile::tempdir().unwrap();
    let out = rt_cmd(&b, &["run", "--rm", &remote, "true"]).env("DOCKER_CONFIG", empty.path()).output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("cannot pull") && err.contains("anonymous"), "{err}");
    // With docker's login it pulls.
    let out = rt_cmd(&b, &["run", "--rm", &remote, "echo", "private"])
        .env("DOCKER_CONFIG", client.config_dir())
        .output()
        .unwrap();
    // (docker stored an identity token, a refresh token for the token endpoint, not a password.)
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "private\n");
}

#[test]
fn the_runtime_refuses_to_run_without_root() {
    // A copy of the binary that an unprivileged user may execute.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let bin = dir.path().join("berth");
    std::fs::copy(berth_bin(), &bin).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(["ps", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("setpriv (util-linux)");
    // `ps` is not `run`/`start`: like docker's other commands it exits 1 on a failure.
    assert_eq!(out.status.code(), Some(1), "a failed ps");
    assert!(text(&out.stderr).contains("needs root"), "{}", text(&out.stderr));
    assert!(!dir.path().join("data").exists(), "nothing is created for an unprivileged caller");
}

// ---- hardening: seccomp, capabilities, no-new-privileges, privileged, read-only, users ---------

/// The probe: a static C program that tries what docker's default hardening refuses and prints
/// one `name=OK` or `name=ERRNO` line each: a thread (glibc tries clone3 first and falls back to
/// clone only on ENOSYS), keyctl, mounting a tmpfs on /mnt, making and opening a device node
/// (/dev/loop0's numbers, under /tmp: mknod is allowed, CAP_MKNOD being docker's, and opening
/// it needs no capability, so only the device cgroup refuses it), unshare(CLONE_NEWUSER).
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static void report(const char *what, int rc) {
    printf("%s=%s\n", what, rc < 0 ? strerrorname_np(errno) : "OK");
}

static void *nothing(void *arg) { return arg; }

int main(void) {
    pthread_t t;
    int rc = pthread_create(&t, NULL, nothing, NULL);
    if (rc == 0) pthread_join(t, NULL); else errno = rc;
    report("thread", rc == 0 ? 0 : -1);
    report("keyctl", (int)syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 1));
    report("mount", mount("tmpfs", "/mnt", "tmpfs", 0, NULL));
    unlink("/tmp/probe-loop");
    rc = mknod("/tmp/probe-loop", S_IFBLK | 0600, makedev(7, 0));
    if (rc == 0) {
        rc = open("/tmp/probe-loop", O_RDONLY | O_NONBLOCK);
        unlink("/tmp/probe-loop");
    }
    report("device", rc);
    report("unshare", unshare(CLONE_NEWUSER));
    return 0;
}
"#;

/// Compiles the probe with `gcc -static`; returns its bytes.
fn build_probe() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe.c"), PROBE_C).unwrap();
    let out = dir.path().join("probe");
    run(Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&out).arg(dir.path().join("probe.c")).arg("-lpthread"));
    std::fs::read(out).unwrap()
}

/// A server with `rt/probe`: busybox, the probe as /bin/probe, /mnt and /tmp.
fn server_with_probe() -> Berth {
    let b = Berth::start();
    let probe = build_probe();
    let layer = busybox_layer(&[Entry::Dir("mnt/"), Entry::Dir("tmp/"), Entry::File("bin/probe", &probe)]);
    push_runnable(&b, "rt/probe", &[(layer, true)]);
    b
}

/// The value of a `/proc/self/status` field in the container (`NoNewPrivs`, `Seccomp`, `CapEff`).
fn status_field(b: &Berth, flags: &[&str], field: &str) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["rt/probe", "cat", "/proc/self/status"]);
    let out = rt_ok(b, &args);
    let prefix = format!("{field}:");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {field} in\n{out}"))
}

/// This process's (root's) bounding set: what `--privileged` gives.
fn own_capability_bounding_set() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find_map(|l| l.strip_prefix("CapBnd:").map(|v| v.trim().to_string())).unwrap()
}

/// Docker's default seccomp semantics: keyctl, mount and unshare(CLONE_NEWUSER) fail with EPERM
/// (threads still work: clone3 answers ENOSYS, clone without namespace flags is allowed), and a
/// device node the container makes cannot be opened (the device cgroup). `seccomp=unconfined`
/// lifts the filter but not the capability checks; CAP_SYS_ADMIN brings mount and unshare into
/// the filter (never keyctl); `--privileged` allows everything.
#[test]
fn the_default_seccomp_profile_refuses_what_dockers_refuses() {
    let b = server_with_probe();
    let probe = |flags: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["rt/probe", "probe"]);
        rt_ok(&b, &args)
    };
    let lines = |v: &[&str]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    assert_eq!(
        probe(&[]),
        lines(&["thread=OK", "keyctl=EPERM", "mount=EPERM", "device=EPERM", "unshare=EPERM"]),
        "the default profile"
    );
    assert_eq!(status_field(&b, &[], "Seccomp"), "2", "a filter by default");
    assert_eq!(
        probe(&["--security-opt", "seccomp=unconfined"]),
        lines(&["thread=OK", "keyctl=OK", "mount=EPERM", "device=EPERM", "unshare=OK"]),
        "unconfined: only capabilities refuse"
    );
    assert_eq!(status_field(&b, &["--security-opt", "seccomp=unconfined"], "Seccomp"), "0");
    assert_eq!(
        probe(&["--cap-add", "SYS_ADMIN"]),
        lines(&["thread=OK", "keyctl=EPERM", "mount=OK", "device=EPERM", "unshare=OK"]),
        "CAP_SYS_ADMIN opens mount and unshare in the filter, not keyctl"
    );
    assert_eq!(
        probe(&["--security-opt", "seccomp=unconfined", "--cap-add", "SYS_ADMIN"]),
        lines(&["thread=OK", "keyctl=OK", "mount=OK", "device=EPERM", "unshare=OK"]),
    );
    assert_eq!(
        probe(&["--privileged"]),
        lines(&["thread=OK", "keyctl=OK", "mount=OK", "device=OK", "unshare=OK"]),
        "privileged"
    );
    assert_eq!(status_field(&b, &["--privileged"], "Seccomp"), "0");

    // A docker-format profile from a file: everything allowed but mkdir.
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let out = rt(&b, &["run", "--rm", "--security-opt", &opt, "rt/probe", "mkdir", "/tmp/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Permission denied"), "{}", text(&out.stderr));
    assert_eq!(
        rt_ok(&b, &["run", "--rm", "--security-opt", &opt, "rt/probe", "probe"]),
        lines(&["thread=OK", "keyctl=OK", "mount=EPERM", "device=EPERM", "unshare=OK"]),
    );
    // Bad options are Berth's errors (125), one line each.
    std::fs::write(dir.path().join("bad.json"), "{\"syscalls\": 3}").unwrap();
    let bad = format!("seccomp={}", dir.path().join("bad.json").display());
    for (args, says) in [
        (vec!["--security-opt", "seccomp=/nonexistent.json"], "cannot read the seccomp profile"),
        (vec!["--security-opt", bad.as_str()], "not a docker seccomp profile"),
        (vec!["--security-opt", "apparmor=unconfined"], "is not supported"),
        (vec!["--security-opt", "no-new-privileges=perhaps"], "true or false"),
        (vec!["--cap-add", "NOT_A_CAP"], "unknown capability"),
        (vec!["--tmpfs", "/t:bogus"], "unknown option"),
        (vec!["--tmpfs", "/data", "-v", "vol:/data"], "duplicate mount point"),
    ] {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(&args);
        a.extend_from_slice(&["rt/probe", "true"]);
        let out = rt(&b, &a);
        assert_eq!(out.status.code(), Some(125), "{a:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(says), "{a:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr).lines().count(), 1, "{a:?}: {}", text(&out.stderr));
    }
    assert!(std::fs::read_dir(containers_dir(&b)).unwrap().next().is_none(), "containers left behind");
}

/// Capabilities as docker sets them: its default set, `--cap-drop`/`--cap-add` (with ALL),
/// everything Berth has for `--privileged`; `no-new-privileges` only when asked.
#[test]
fn capabilities_and_no_new_privileges() {
    let b = server_with_probe();
    // Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
    // NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert_eq!(status_field(&b, &[], "CapEff"), "00000000a80425fb");
    assert_eq!(status_field(&b, &["--cap-drop", "chown"], "CapEff"), "00000000a80425fa");
    assert_eq!(status_field(&b, &["--cap-add", "CAP_NET_ADMIN"], "CapEff"), "00000000a80435fb");
    assert_eq!(status_field(&b, &["--cap-drop", "ALL", "--cap-add", "NET_ADMIN"], "CapEff"), "0000000000001000");
    assert_eq!(status_field(&b, &["--cap-drop", "ALL"], "CapBnd"), "0000000000000000");
    let all = own_capability_bounding_set();
    assert_eq!(status_field(&b, &["--cap-add", "ALL"], "CapEff"), all);
    assert_eq!(status_field(&b, &["--privileged"], "CapEff"), all);

    assert_eq!(status_field(&b, &[], "NoNewPrivs"), "0", "off by default, as in docker");
    assert_eq!(status_field(&b, &["--security-opt", "no-new-privileges"], "NoNewPrivs"), "1");
    assert_eq!(status_field(&b, &["--security-opt", "no-new-privileges=true"], "NoNewPrivs"), "1");
    assert_eq!(status_field(&b, &["--security-opt", "no-new-privileges:false"], "NoNewPrivs"), "0");
    // The filter is there with the flag too (then loaded after the capabilities are dropped).
    assert_eq!(status_field(&b, &["--security-opt", "no-new-privileges"], "Seccomp"), "2");
    let lines = rt_ok(&b, &["run", "--rm", "--security-opt", "no-new-privileges", "rt/probe", "probe"]);
    assert!(lines.contains("keyctl=EPERM") && lines.contains("thread=OK"), "{lines}");
}

/// Docker's masked paths hide the kernel's internals from /proc; `--privileged` shows them, mounts
/// /sys read-write and gives the host's devices.
#[test]
fn masked_paths_and_privileged_containers() {
    let b = server_with_probe();
    // /proc/kcore does not exist on every kernel (not on this one's VM); where it does it is
    // bound to /dev/null. Either way nothing of it is read.
    let out = rt(&b, &["run", "--rm", "rt/probe", "sh", "-c", "cat /proc/kcore | head -c 4"]);
    assert_eq!(text(&out.stdout), "", "kcore read: {}", text(&out.stderr));
    assert!(Path::new("/proc/timer_list").exists(), "the host has /proc/timer_list");
    assert_eq!(rt_ok(&b, &["run", "--rm", "rt/probe", "cat", "/proc/timer_list"]), "", "masked");
    assert_eq!(rt_ok(&b, &["run", "--rm", "rt/probe", "ls", "/sys/firmware"]), "", "masked");
    // (The UTS namespace's own host name: harmless if it were writable.)
    let out = rt(&b, &["run", "--rm", "rt/probe", "sh", "-c", "echo other > /proc/sys/kernel/hostname"]);
    assert!(!out.status.success() && text(&out.stderr).contains("Read-only"), "{}", text(&out.stderr));
    let out = rt(&b, &["run", "--rm", "rt/probe", "test", "-c", "/dev/kmsg"]);
    assert_eq!(out.status.code(), Some(1), "no host devices by default");
    let mounts = rt_ok(&b, &["run", "--rm", "rt/probe", "grep", " /sys ", "/proc/mounts"]);
    assert!(mounts.contains(" ro,"), "{mounts}");

    let timers = rt_ok(&b, &["run", "--rm", "--privileged", "rt/probe", "head", "-c", "10", "/proc/timer_list"]);
    assert_eq!(timers, "Timer List");
    rt_ok(&b, &["run", "--rm", "--privileged", "rt/probe", "test", "-c", "/dev/kmsg"]);
    let mounts = rt_ok(&b, &["run", "--rm", "--privileged", "rt/probe", "grep", " /sys ", "/proc/mounts"]);
    assert!(mounts.contains(" rw,"), "{mounts}");
}

/// `--read-only` refuses writes to the root; `--tmpfs` mounts are writable (noexec, nosuid,
/// nodev unless asked otherwise), and go with the container.
#[test]
fn read_only_roots_and_tmpfs_mounts() {
    let b = server_with_probe();
    let out = rt(&b, &["run", "--rm", "--read-only", "rt/probe", "touch", "/file"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Read-only file system"), "{}", text(&out.stderr));
    let out = rt(&b, &["run", "--rm", "--read-only", "rt/probe", "touch", "/tmp/file"]);
    assert!(text(&out.stderr).contains("Read-only file system"), "{}", text(&out.stderr));
    // Without it the root is writable.
    rt_ok(&b, &["run", "--rm", "rt/probe", "touch", "/file"]);

    let script = "echo kept > /tmp/f && cat /tmp/f && grep ' /tmp ' /proc/mounts && grep ' /run ' /proc/mounts";
    let out = rt_ok(
        &b,
        &[
            "run",
            "--rm",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/run:size=1m,exec",
            "rt/probe",
            "sh",
            "-c",
            script,
        ],
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("kept"));
    let tmp = lines.next().unwrap();
    assert!(
        tmp.starts_with("tmpfs /tmp tmpfs rw,")
            && tmp.contains("nosuid")
            && tmp.contains("nodev")
            && tmp.contains("noexec"),
        "{tmp}"
    );
    let run_mount = lines.next().unwrap();
    assert!(run_mount.contains("size=1024k") && !run_mount.contains("noexec"), "{run_mount}");
    // A tmpfs is the container's own: a second run does not see the first one's files.
    let id = rt_ok(&b, &["run", "-d", "--tmpfs", "/mnt", "rt/probe", "sh", "-c", "echo x > /mnt/f"]).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rt_ok(&b, &["ps", "-a"]).contains("Exited (0)") {
        assert!(Instant::now() < deadline, "the container did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!containers_dir(&b).join(&id).join("upper/mnt/f").exists(), "tmpfs writes are not in the layer");
    rt_ok(&b, &["rm", &id]);
}

/// `--user` takes a uid[:gid] or names from the image's own /etc/passwd and /etc/group. A layer
/// whose etc links to /etc never makes Berth read the host's accounts: a name only the host has
/// is not found.
#[test]
fn users_come_from_the_image_never_from_the_host() {
    let b = Berth::start();
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(host_passwd.lines().any(|l| l.starts_with("_apt:")), "the host (Debian) has the _apt user");
    push_runnable(&b, "rt/etc-link", &[(busybox_layer(&[Entry::Symlink("etc", "/etc")]), true)]);
    let out = rt(&b, &["run", "--rm", "--user", "_apt", "rt/etc-link", "id"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(r#"user "_apt" is not in the image's /etc/passwd"#), "{}", text(&out.stderr));
    let out = rt(&b, &["run", "--rm", "--user", "0:_apt", "rt/etc-link", "id"]);
    assert_eq!(out.status.code(), Some(125), "a group only the host has: {}", text(&out.stderr));

    // Names in the image resolve, with docker's supplementary groups: the primary one, and
    // without an explicit group those that list the user.
    let passwd = b"root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    let group = b"root:x:0:\napp:x:1001:\nextra:x:2000:app\n";
    let layer =
        busybox_layer(&[Entry::Dir("etc/"), Entry::Plain("etc/passwd", passwd), Entry::Plain("etc/group", group)]);
    push_runnable(&b, "rt/users", &[(layer, true)]);
    assert_eq!(
        rt_ok(&b, &["run", "--rm", "-u", "app", "rt/users", "id"]),
        "uid=1000(app) gid=1001(app) groups=1001(app),2000(extra)\n"
    );
    assert_eq!(
        rt_ok(&b, &["run", "--rm", "--user", "app:extra", "rt/users", "id"]),
        "uid=1000(app) gid=2000(extra) groups=2000(extra)\n"
    );
    assert_eq!(rt_ok(&b, &["run", "--rm", "rt/users", "id"]), "uid=0(root) gid=0(root) groups=0(root)\n");
    let out = rt(&b, &["run", "--rm", "--user", "_apt", "rt/users", "id"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    // Numbers need no entry.
    assert_eq!(rt_ok(&b, &["run", "--rm", "--user", "1234:5678", "rt/users", "id"]), "uid=1234 gid=5678 groups=5678\n");
    // A non-root user keeps no capabilities.
    let status = rt_ok(&b, &["run", "--rm", "-u", "app", "rt/users", "grep", "CapEff", "/proc/self/status"]);
    assert_eq!(status.trim(), "CapEff:\t0000000000000000");
}

// ---- exec ------------------------------------------------------------------------------------

/// `berth exec` runs a command in a running container: its processes, files, user, environment
/// and working directory; `-u`, `-e`, `-w`; its exit status (126/127 as for `run`); the
/// container's seccomp filter and capabilities apply to it too (libcontainer's tenant builder
/// alone would drop the filter).
#[test]
fn exec_runs_commands_in_a_running_container() {
    let b = server_with_probe();
    let id = rt_ok(
        &b,
        &[
            "run",
            "-d",
            "--name",
            "host",
            "-e",
            "FROM_RUN=1",
            "-w",
            "/tmp",
            "rt/probe",
            "sh",
            "-c",
            "echo made > /tmp/made; exec sleep 1000",
        ],
    );
    let id = id.trim().to_string();
    // The container's files, environment, working directory; a new process beside PID 1.
    let out = rt_ok(
        &b,
        &[
            "exec",
            "host",
            "sh",
            "-c",
            "cat /tmp/made; echo $FROM_RUN $(pwd); cat /proc/1/cmdline | head -c 5; echo; test $$ != 1 && echo not-pid-1",
        ],
    );
    assert_eq!(out, "made\n1 /tmp\nsleep\nnot-pid-1\n");
    let out =
        rt_ok(&b, &["exec", "-e", "EXTRA=x", "-w", "/mnt", &id[..12], "sh", "-c", "echo $EXTRA $FROM_RUN $(pwd)"]);
    assert_eq!(out, "x 1 /mnt\n");
    assert_eq!(rt_ok(&b, &["exec", "-u", "1234:5678", "host", "id"]), "uid=1234 gid=5678 groups=5678\n");
    // Exit statuses.
    let out = rt(&b, &["exec", "host", "sh", "-c", "echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stderr), "err\n");
    let out = rt(&b, &["exec", "host", "/nope"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));
    let out = rt(&b, &["exec", "host", "/tmp"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    let out = rt(&b, &["exec", "no-such-container", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    // stdin with -i.
    let mut child =
        rt_cmd(&b, &["exec", "-i", "host", "cat"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"through stdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "through stdin\n");
    // The same hardening as the container's own processes.
    assert_eq!(
        rt_ok(&b, &["exec", "host", "probe"]),
        "thread=OK\nkeyctl=EPERM\nmount=EPERM\ndevice=EPERM\nunshare=EPERM\n"
    );
    let status = rt_ok(&b, &["exec", "host", "cat", "/proc/self/status"]);
    let field =
        |f: &str| status.lines().find_map(|l| l.strip_prefix(&format!("{f}:")).map(|v| v.trim().to_string())).unwrap();
    assert_eq!(field("Seccomp"), "2");
    assert_eq!(field("CapEff"), "00000000a80425fb", "no CAP_SYS_ADMIN left over");
    assert_eq!(field("CapBnd"), "00000000a80425fb");
    // Not running: refused.
    rt_ok(&b, &["stop", "-t", "0", "host"]);
    let out = rt(&b, &["exec", "host", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("is not running"), "{}", text(&out.stderr));
    rt_ok(&b, &["rm", "host"]);
}

/// `berth exec -it` under tmux: an interactive shell in a running container sees its processes
/// and files; the exit status propagates and the terminal comes back as it was.
#[test]
fn exec_interactive_tty_under_tmux() {
    let (b, img, _images) = server_with_busybox("exec-tty");
    let id = rt_ok(&b, &["run", "-d", &img, "sh", "-c", "echo inside > /tmp/mark; exec sleep 1000"]).trim().to_string();
    let session = format!("berth-exec-{}", b.port);
    let tmp = tempfile::tempdir().unwrap();
    run(Command::new("tmux").args(["new-session", "-d", "-s", &session, "-x", "100", "-y", "30", "sh"]));
    let _guard = Tmux(session.clone());
    let send = |keys: &str| run(Command::new("tmux").args(["send-keys", "-t", &session, keys, "Enter"]));
    let before = tmp.path().join("before");
    let after = tmp.path().join("after");
    send(&format!("stty -g > {}", before.display()));
    let mut env = String::new();
    for (k, v) in b.backend().env() {
        env.push_str(&format!("{k}='{v}' "));
    }
    send(&format!("{env}{} --data-dir {} exec -it {} sh; echo EXIT=$?", berth_bin(), b.data_dir.display(), &id[..12]));
    wait_for_pane(&session, "/ #");
    send("cat /tmp/mark; ps -o comm | grep -c sleep; tty; exit 3");
    let p = wait_for_pane(&session, "EXIT=3");
    assert!(p.lines().any(|l| l.trim_end() == "inside"), "{p}");
    assert!(p.lines().any(|l| l.trim_end() == "1"), "the container's sleep is visible: {p}");
    assert!(p.lines().any(|l| l.trim_end().starts_with("/dev/pts/")), "a pty: {p}");
    send(&format!("stty -g > {}; echo SAV''ED", after.display()));
    wait_for_pane(&session, "SAVED");
    assert_eq!(std::fs::read_to_string(&before).unwrap(), std::fs::read_to_string(&after).unwrap());
    rt_ok(&b, &["rm", "-f", &id]);
}

/// Reads a child's stdout on a thread; the lines arrive on the channel.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a child, at most `secs`.
fn wait_at_most(child: &mut std::process::Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `logs -f` prints what is there, then what the container writes after it started, and ends
/// when the container exits; `--tail N` keeps the last lines.
#[test]
fn logs_follow_until_the_container_exits() {
    let (b, img, _images) = server_with_busybox("follow");
    let gate = tempfile::tempdir().unwrap();
    let volume = format!("{}:/gate", gate.path().display());
    let script = "echo first; while [ ! -e /gate/go ]; do sleep 0.05; done; echo second; echo err-line >&2; exit 3";
    let id = rt_ok(&b, &["run", "-d", "--name", "follow", "-v", &volume, &img, "sh", "-c", script]);
    let id = id.trim();
    let mut follower = rt_cmd(&b, &["logs", "-f", "follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut follower);
    assert_eq!(lines.recv_timeout(Duration::from_secs(20)).expect("the output written before logs -f"), "first");
    // Still following while the container runs.
    std::thread::sleep(Duration::from_millis(500));
    assert!(follower.try_wait().unwrap().is_none(), "logs -f ended while the container runs");
    std::fs::write(gate.path().join("go"), "").unwrap();
    assert_eq!(lines.recv_timeout(Duration::from_secs(20)).expect("output written after logs -f started"), "second");
    let status = wait_at_most(&mut follower, 20).expect("logs -f did not end when the container exited");
    assert!(status.success(), "{status}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut follower.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(err, "err-line\n");
    assert!(lines.recv_timeout(Duration::from_millis(200)).is_err(), "nothing more on stdout");
    assert!(rt_ok(&b, &["ps", "-a"]).contains("Exited (3)"));

    // Of an exited container: everything at once, and it returns.
    let out = rt(&b, &["logs", "-f", &id[..12]]);
    assert_eq!((text(&out.stdout).as_str(), text(&out.stderr).as_str()), ("first\nsecond\n", "err-line\n"));
    // --tail counts lines over both streams.
    let out = rt(&b, &["logs", "--tail", "2", "follow"]);
    assert_eq!((text(&out.stdout).as_str(), text(&out.stderr).as_str()), ("second\n", "err-line\n"));
    let out = rt(&b, &["logs", "-n", "0", "follow"]);
    assert_eq!((text(&out.stdout).as_str(), text(&out.stderr).as_str()), ("", ""));
    // Failures exit 1 (a bad flag 125), as docker's do.
    assert_eq!(rt(&b, &["logs", "-f", "nonexistent"]).status.code(), Some(1));
    assert_eq!(rt(&b, &["logs", "--tail", "many", "follow"]).status.code(), Some(1));
    assert_eq!(rt(&b, &["logs", "--bogus", "follow"]).status.code(), Some(125));
    rt_ok(&b, &["rm", "follow"]);
}

/// The layer cache's entries (diff_id hex).
fn cached_layers(b: &Berth) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(b.data_dir.join("runtime/layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// `rmi` removes the runtime's unpacked copy of an image, never while a container (running or
/// stopped) was made from it (unless -f, which still keeps what the container has); the
/// registry store keeps the image.
#[test]
fn rmi_is_refused_while_a_container_uses_the_image() {
    let (b, img, _images) = server_with_busybox("rmi");
    rt_ok(&b, &["run", "--name", "stopped", &img, "true"]);
    let layers = cached_layers(&b);
    assert_eq!(layers.len(), 1, "{layers:?}");

    let out = rt(&b, &["rmi", &img]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("in use by stopped container"), "{}", text(&out.stderr));
    assert_eq!(cached_layers(&b), layers);

    // -f with a running container: allowed, but the container's layer stays and it runs on.
    let running = rt_ok(&b, &["run", "-d", &img, "sleep", "1000"]).trim().to_string();
    let out = rt(&b, &["rmi", &img]);
    assert!(text(&out.stderr).contains("in use by"), "{}", text(&out.stderr));
    let out = rt(&b, &["rmi", "-f", &img]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(cached_layers(&b), layers);
    assert_eq!(rt_ok(&b, &["exec", &running, "echo", "alive"]), "alive\n");
    rt_ok(&b, &["rm", "-f", &running]);

    // After rm: removed; the store keeps the image, and run unpacks it again.
    rt_ok(&b, &["rm", "stopped"]);
    let out = rt_ok(&b, &["rmi", &img]);
    assert_eq!(out, format!("Deleted: sha256:{}\n", layers[0]));
    assert!(cached_layers(&b).is_empty());
    let images = rt_ok(&b, &["images"]);
    assert!(images.lines().any(|l| l.starts_with(&img) && l.ends_with("0/1")), "{images}");
    assert_eq!(rt_ok(&b, &["run", "--rm", &img, "echo", "back"]), "back\n");
    assert_eq!(cached_layers(&b), layers);
    assert_eq!(rt_ok(&b, &["image", "rm", &img]), format!("Deleted: sha256:{}\n", layers[0]));
    let out = rt(&b, &["rmi", "rt/not-there"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no such image"), "{}", text(&out.stderr));
}

/// Incompressible bytes (a small xorshift generator), so a layer's size is what it holds.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `du -sx -B1` of the runtime's directory.
fn du(b: &Berth) -> u64 {
    let out = run(Command::new("du").arg("-sx").arg("-B1").arg(b.data_dir.join("runtime")));
    out.split_whitespace().next().unwrap().parse().unwrap()
}

/// A prune's output: what it listed and the bytes of "Total reclaimed space: …".
fn reclaimed(out: &str) -> u64 {
    let size = out
        .lines()
        .find_map(|l| l.strip_prefix("Total reclaimed space: "))
        .unwrap_or_else(|| panic!("no total in {out:?}"));
    let at = size.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let number: f64 = size[..at].parse().unwrap();
    let unit = match &size[at..] {
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        u => panic!("unit {u}"),
    };
    (number * unit) as u64
}

/// Runs a prune, checks that `du` drops by what it says it freed; returns its output.
fn prune_measured(b: &Berth, args: &[&str]) -> String {
    let before = du(b);
    let out = rt_ok(b, args);
    let after = du(b);
    let said = reclaimed(&out);
    let freed = before.saturating_sub(after);
    // The total has four significant digits.
    let slack = said / 500 + 4096;
    assert!(freed.abs_diff(said) <= slack, "{args:?}: du says {freed} bytes freed, the prune {said}:\n{out}");
    out
}

/// `image prune` and `system prune` free the disk they say they free and never remove a layer
/// a remaining image or container has.
#[test]
fn prunes_free_what_they_say_and_keep_what_is_used() {
    let b = Berth::start();
    let base = busybox_layer(&[Entry::Symlink("bin/sleep", "busybox")]);
    let (a, bb, c) = (noise(3_000_000, 1), noise(2_000_000, 2), noise(1_000_000, 3));
    let layer = |name: &str, data: &[u8]| tar_of_entries(&[Entry::Plain(name, data)]);
    push_runnable(&b, "rt/pa", &[(base.clone(), true), (layer("a.bin", &a), true)]);
    push_runnable(&b, "rt/pb", &[(base.clone(), true), (layer("b.bin", &bb), false)]);
    push_runnable(&b, "rt/pc", &[(base.clone(), true), (layer("c.bin", &c), true)]);
    let hex = |tar: &[u8]| sha256(tar).trim_start_matches("sha256:").to_string();
    let (base_id, a_id, b_id, c_id) =
        (hex(&base), hex(&layer("a.bin", &a)), hex(&layer("b.bin", &bb)), hex(&layer("c.bin", &c)));
    for img in ["rt/pa", "rt/pb", "rt/pc"] {
        rt_ok(&b, &["run", "--rm", img, "sh", "-c", ":"]);
    }
    let mut all = vec![base_id.clone(), a_id.clone(), b_id.clone(), c_id.clone()];
    all.sort();
    assert_eq!(cached_layers(&b), all);
    // rt/pc's tag moves to an image without c.bin: that layer is dangling now.
    push_runnable(&b, "rt/pc", &[(base.clone(), true)]);
    // A stopped container of rt/pa with a volume.
    assert_eq!(
        rt_ok(&b, &["run", "--name", "sa", "-v", "vol1:/v", "rt/pa", "sh", "-c", "echo hi > /v/x; echo done"]),
        "done\n"
    );

    // image prune: only what no image in the store and no container has.
    let out = prune_measured(&b, &["image", "prune", "-f"]);
    assert!(out.contains(&format!("deleted: sha256:{c_id}")), "{out}");
    assert!(reclaimed(&out) >= 1_000_000, "{out}");
    let mut left = vec![base_id.clone(), a_id.clone(), b_id.clone()];
    left.sort();
    assert_eq!(cached_layers(&b), left);
    // Nothing more to prune.
    assert_eq!(prune_measured(&b, &["image", "prune", "-f"]), "Total reclaimed space: 0B\n");

    // -a: also layers of images no container has (rt/pb's own layer); the base stays, rt/pa's
    // container has it.
    let out = prune_measured(&b, &["image", "prune", "-a", "-f"]);
    assert!(out.contains(&format!("deleted: sha256:{b_id}")) && !out.contains(&base_id), "{out}");
    assert!(reclaimed(&out) >= 2_000_000, "{out}");
    let mut left = vec![base_id.clone(), a_id.clone()];
    left.sort();
    assert_eq!(cached_layers(&b), left);
    // The stopped container starts again on its layers; the image sharing the base runs.
    let out = rt(&b, &["start", "-a", "sa"]);
    assert!(out.status.success() && text(&out.stdout) == "done\n", "{}", text(&out.stderr));
    assert_eq!(rt_ok(&b, &["run", "--rm", "rt/pb", "sh", "-c", "test -s /b.bin && echo ok"]), "ok\n");

    // system prune -a --volumes: the stopped container, its volume, the layers only it had;
    // a running container of rt/pb keeps the base and rt/pb's layer, and runs on.
    let rb = rt_ok(&b, &["run", "-d", "--name", "rb", "rt/pb", "sleep", "1000"]).trim().to_string();
    let out = prune_measured(&b, &["system", "prune", "-a", "--volumes", "-f"]);
    assert!(out.contains("Deleted Containers:") && out.contains("Deleted Volumes:\nvol1\n"), "{out}");
    assert!(out.contains(&format!("deleted: sha256:{a_id}")), "{out}");
    assert!(reclaimed(&out) >= 3_000_000, "{out}");
    let mut left = vec![base_id.clone(), b_id.clone()];
    left.sort();
    assert_eq!(cached_layers(&b), left);
    assert!(!b.data_dir.join("runtime/volumes/vol1").exists());
    assert_eq!(rt_ok(&b, &["ps", "-a", "-q", "--no-trunc"]).trim(), rb);
    assert_eq!(rt_ok(&b, &["exec", "rb", "sh", "-c", "test -s /b.bin && echo ok"]), "ok\n");
    // Without -a nothing of the running container's image goes.
    prune_measured(&b, &["system", "prune", "-f"]);
    assert_eq!(cached_layers(&b), left);
    // Without -f and without a "y", nothing happens.
    let out = rt(&b, &["system", "prune", "-a"]);
    assert!(!out.status.success());
    rt_ok(&b, &["rm", "-f", "rb"]);
    prune_measured(&b, &["system", "prune", "-a", "-f"]);
    assert!(cached_layers(&b).is_empty());
    assert_eq!(rt_ok(&b, &["run", "--rm", "rt/pa", "sh", "-c", "test -s /a.bin && echo ok"]), "ok\n");
}

/// `ps --format` with docker's placeholders and `table`, `--format json`, `-s`.
#[test]
fn ps_format_and_size() {
    let (b, img, _images) = server_with_busybox("psfmt");
    let up = rt_ok(&b, &["run", "-d", "--name", "fmt-up", &img, "sleep", "1000"]).trim().to_string();
    rt_ok(&b, &["run", "--name", "fmt-done", &img, "sh", "-c", "head -c 50000 /dev/zero > /big"]);
    let out = rt_ok(&b, &["ps", "--format", "{{.ID}} {{.Names}} {{.Image}} {{.Command}} {{.Status}}"]);
    assert!(out.starts_with(&format!("{} fmt-up {img} \"sleep 1000\" Up ", &up[..12])), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let out = rt_ok(&b, &["ps", "-a", "--format", "table {{.Names}}\\t{{.State}}"]);
    assert_eq!(out, "NAMES      STATE\nfmt-up     running\nfmt-done   exited\n");
    let out = rt_ok(&b, &["ps", "-a", "--no-trunc", "--format", "{{.ID}}|{{.CreatedAt}}|{{.Status}}"]);
    let done = out.lines().nth(1).unwrap();
    let fields: Vec<&str> = done.split('|').collect();
    assert_eq!(fields[0].len(), 64, "{out}");
    assert!(chrono::NaiveDateTime::parse_from_str(fields[1], "%Y-%m-%d %H:%M:%S +0000 UTC").is_ok(), "{out}");
    assert!(fields[2].starts_with("Exited (0) "), "{out}");
    let out = rt_ok(&b, &["ps", "-a", "-s", "--format", "{{.Names}} {{.Size}}"]);
    let size = out.lines().find_map(|l| l.strip_prefix("fmt-done ")).unwrap();
    assert!(size.starts_with("50kB (virtual ") && size.ends_with("MB)"), "{out}");
    let table = rt_ok(&b, &["ps", "-s"]);
    assert!(table.lines().next().unwrap().ends_with("SIZE"), "{table}");
    let json: serde_json::Value = serde_json::from_str(rt_ok(&b, &["ps", "--format", "json"]).trim()).unwrap();
    assert_eq!((json["Names"].as_str(), json["State"].as_str()), (Some("fmt-up"), Some("running")));
    let out = rt(&b, &["ps", "--format", "{{.Nope}}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unsupported"), "{}", text(&out.stderr));
    rt_ok(&b, &["rm", "-f", "fmt-up", "fmt-done"]);
}

// ---------------------------------------------------------------------------------------------
// Networks (`src/runtime/network.rs`, `ports.rs`). Each test has a bridge and subnet of its own
// (`BERTH_RUNTIME__BRIDGE`, `BERTH_RUNTIME__SUBNET`), so it can check that the bridge, its
// address and its rules are gone while the other tests' containers use `berth0`.

/// A bridge of one test.
struct TestNet {
    bridge: &'static str,
    subnet: &'static str,
    gateway: &'static str,
}

fn rt_net(b: &Berth, net: &TestNet, args: &[&str]) -> Output {
    rt_cmd(b, args)
        .env("BERTH_RUNTIME__BRIDGE", net.bridge)
        .env("BERTH_RUNTIME__SUBNET", net.subnet)
        .stdin(Stdio::null())
        .output()
        .expect("run berth")
}

fn rt_net_ok(b: &Berth, net: &TestNet, args: &[&str]) -> String {
    succeeded(args, rt_net(b, net, args))
}

fn record(b: &Berth, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(containers_dir(b).join(id).join("container.json")).unwrap()).unwrap()
}

fn host_cmd(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} is needed: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// What the host has of a test bridge and of one container's veth: links, addresses, nft and
/// iptables rules (each line names what it found).
fn network_leftovers(net: &TestNet, veth: &str) -> Vec<String> {
    let mut found = Vec::new();
    for l in host_cmd("ip", &["-o", "link"]).lines() {
        if l.contains(&format!(": {}:", net.bridge)) || l.contains(&format!(": {veth}@")) || l.contains(veth) {
            found.push(format!("link: {l}"));
        }
    }
    for l in host_cmd("ip", &["-o", "addr"]).lines() {
        if l.contains(&format!(" {}/", net.gateway)) {
            found.push(format!("address: {l}"));
        }
    }
    if host_cmd("nft", &["list", "ruleset"]).contains(&format!("berth_{}", net.bridge)) {
        found.push(format!("nft table berth_{}", net.bridge));
    }
    for l in host_cmd("iptables-save", &[]).lines() {
        if l.contains(&format!("berth:{}", net.bridge)) {
            found.push(format!("iptables: {l}"));
        }
    }
    found
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GETs `url` with curl, retrying for up to 20 s (a server just started).
fn curl_until_up(url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("curl").args(["-fsS", "--max-time", "5", url]).output().expect("curl is needed");
        if out.status.success() {
            return text(&out.stdout);
        }
        assert!(Instant::now() < deadline, "GET {url}: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
}

const HTTPD: &str = "mkdir -p /www && echo \"page of $(hostname)\" > /www/index.html && exec httpd -f -p 80 -h /www";

#[test]
fn bridge_containers_publish_ports_and_reach_each_other() {
    let net = TestNet { bridge: "btpub", subnet: "10.89.201.0/24", gateway: "10.89.201.1" };
    let (b, img, _images) = server_with_busybox("netpub");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    let id = rt_net_ok(
        &b,
        &net,
        &["run", "-d", "--name", "web1", "--hostname", "web1", "-p", &publish, &img, "sh", "-c", HTTPD],
    );
    let id = id.trim().to_string();
    let address = record(&b, &id)["address"].as_str().expect("a bridge container has an address").to_string();
    assert!(address.starts_with("10.89.201."), "{address}");

    // From the host, through the published port.
    assert_eq!(curl_until_up(&format!("http://127.0.0.1:{port}/")), "page of web1\n");
    // From a second container on the bridge, by address; its /etc/hosts names it at its own.
    let out = rt_net_ok(
        &b,
        &net,
        &[
            "run",
            "--rm",
            "--name",
            "client1",
            &img,
            "sh",
            "-c",
            &format!("wget -qO- http://{address}:80/ && grep client1 /etc/hosts && ip -o addr show eth0 && ip route"),
        ],
    );
    assert!(out.starts_with("page of web1\n"), "{out}");
    assert!(out.contains("10.89.201.") && out.contains("default via 10.89.201.1 dev eth0"), "{out}");
    let hosts = rt_net_ok(&b, &net, &["exec", "web1", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{address}\tweb1\n")) && hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");

    // The same host port again: Berth's error, 125, and nothing of that container is left.
    let out = rt_net(&b, &net, &["run", "--rm", "-p", &publish, &img, "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("already in use"), "{}", text(&out.stderr));

    // A bad -p is refused before anything is made.
    let out = rt_net(&b, &net, &["run", "--rm", "-p", "80", &img, "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));

    rt_net_ok(&b, &net, &["rm", "-f", "web1"]);
    let left = network_leftovers(&net, &format!("vb{}", &id[..12]));
    assert!(left.is_empty(), "after rm: {left:#?}");
    assert!(!Path::new(&format!("/run/berth/netns/{id}")).exists());
    // The port is free again (the proxy went with the monitor).
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the published port is free after rm");
}

#[test]
fn network_none_has_only_loopback_and_host_is_the_hosts() {
    let (b, img, _images) = server_with_busybox("netnone");
    let out = rt_ok(&b, &["run", "--rm", "--network", "none", &img, "sh", "-c", "ip -o link; cat /proc/net/dev"]);
    let links: Vec<&str> = out.lines().filter(|l| l.contains(": <")).collect();
    assert_eq!(links.len(), 1, "{out}");
    assert!(links[0].starts_with("1: lo: <LOOPBACK,UP,LOWER_UP>"), "{out}");
    let devices: Vec<&str> =
        out.lines().filter(|l| l.contains(':') && !l.contains(": <") && !l.contains('|')).collect();
    assert_eq!(devices.len(), 1, "{out}");
    assert!(devices[0].trim_start().starts_with("lo:"), "{out}");
    // -p needs an address.
    let out = rt(&b, &["run", "--rm", "--network", "none", "-p", "18099:80", &img, "true"]);
    assert_eq!(out.status.code(), Some(125));
    // host: the host's interfaces.
    let out = rt_ok(&b, &["run", "--rm", "--network", "host", &img, "cat", "/proc/net/dev"]);
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    let names = |s: &str| -> Vec<String> {
        let mut v: Vec<String> =
            s.lines().skip(2).filter_map(|l| Some(l.split(':').next()?.trim().to_string())).collect();
        v.sort();
        v
    };
    let inside = names(&out);
    assert!(inside.len() > 1 && names(&host).iter().filter(|n| inside.contains(n)).count() == inside.len(), "{out}");
}

/// A network namespace with a TCP server that answers each connection with the address it
/// came from, reached from the host through a veth pair (not through the test bridge).
struct Outside {
    ns: String,
    server: std::process::Child,
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
fn outbound_traffic_is_masqueraded() {
    let net = TestNet { bridge: "btnat", subnet: "10.89.202.0/24", gateway: "10.89.202.1" };
    let (b, img, _images) = server_with_busybox("netnat");
    let ns = "berth-test-nat".to_string();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    host_cmd("ip", &["netns", "add", &ns]);
    let _ = Command::new("ip").args(["link", "del", "btnat-h"]).status();
    host_cmd("ip", &["link", "add", "btnat-h", "type", "veth", "peer", "name", "btnat-o", "netns", &ns]);
    host_cmd("ip", &["addr", "add", "10.199.77.1/30", "dev", "btnat-h"]);
    host_cmd("ip", &["link", "set", "btnat-h", "up"]);
    host_cmd("ip", &["-n", &ns, "addr", "add", "10.199.77.2/30", "dev", "btnat-o"]);
    host_cmd("ip", &["-n", &ns, "link", "set", "btnat-o", "up"]);
    host_cmd("ip", &["-n", &ns, "link", "set", "lo", "up"]);
    let script = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                  s.bind(('10.199.77.2',8088))\ns.listen()\nwhile True:\n c,a=s.accept()\n \
                  c.sendall(('HTTP/1.0 200 OK\\r\\n\\r\\nfrom '+a[0]+'\\n').encode())\n c.close()\n";
    let server = Command::new("ip").args(["netns", "exec", &ns, "python3", "-c", script]).spawn().expect("python3");
    let _outside = Outside { ns: ns.clone(), server };
    let out = rt_net_ok(
        &b,
        &net,
        &[
            "run",
            "--rm",
            &img,
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://10.199.77.2:8088/ && exit 0; sleep 0.5; done; exit 1",
        ],
    );
    // The server saw the host's address on its link, not the container's (busybox wget may exit
    // non-zero after printing this minimal server's answer, so the loop may print it twice).
    assert!(!out.is_empty() && out.lines().all(|l| l == "from 10.199.77.1"), "{out:?}");
    let left = network_leftovers(&net, "vb-none");
    assert!(left.is_empty(), "after the --rm container: {left:#?}");
}

#[test]
fn a_killed_monitor_leaves_no_network_behind() {
    let net = TestNet { bridge: "btkill", subnet: "10.89.203.0/24", gateway: "10.89.203.1" };
    let (b, img, _images) = server_with_busybox("netkill");
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    let id = rt_net_ok(&b, &net, &["run", "-d", "--hostname", "k", "-p", &publish, &img, "sh", "-c", HTTPD]);
    let id = id.trim().to_string();
    let veth = format!("vb{}", &id[..12]);
    assert_eq!(curl_until_up(&format!("http://127.0.0.1:{port}/")), "page of k\n");
    // Everything is there while it runs.
    let there = network_leftovers(&net, &veth);
    for what in ["link: ", "address: ", "nft table", "iptables: "] {
        if what == "iptables: " && !host_cmd("iptables-save", &["-t", "filter"]).contains(":DOCKER-USER") {
            continue; // no docker engine: no DOCKER-USER chain to add rules to
        }
        assert!(there.iter().any(|l| l.starts_with(what)), "no {what} while running: {there:#?}");
    }
    assert!(there.iter().any(|l| l.contains(&veth)), "{there:#?}");

    let monitor = record(&b, &id)["monitor_pid"].as_i64().unwrap();
    run(Command::new("kill").args(["-KILL", &monitor.to_string()]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{monitor}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        assert!(Instant::now() < deadline, "the monitor did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The proxy died with it (the leader shows as a zombie before its other threads, which
    // share the descriptors, are gone: wait for the port).
    while let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
        assert!(Instant::now() < deadline, "the published port is still taken after kill -9: {e}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Any command cleans up.
    rt_net_ok(&b, &net, &["ps"]);
    let left = network_leftovers(&net, &veth);
    assert!(left.is_empty(), "after kill -9 and ps: {left:#?}");
    assert!(!Path::new(&format!("/run/berth/netns/{id}")).exists());
    // It starts again, with the network back, and rm clears it.
    rt_net_ok(&b, &net, &["start", &id[..12]]);
    assert_eq!(curl_until_up(&format!("http://127.0.0.1:{port}/")), "page of k\n");
    rt_net_ok(&b, &net, &["rm", "-f", &id[..12]]);
    let left = network_leftovers(&net, &veth);
    assert!(left.is_empty(), "after rm: {left:#?}");
}
