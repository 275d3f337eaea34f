//! End-to-end tests of the bundled runtime (`berth run`, `ps`, `stop`, `rm`, `start`, `logs`,
//! `images`, `volume`): real berth servers, images pushed by the docker engine or through the
//! registry API, and `berth <cmd> --data-dir <the server's data dir>` run while the server runs.
//!
//! Needs root, the docker engine, Debian's `busybox-static`, `curl` and `tmux`.

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
    let out = rt(b, args);
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

/// A base layer with busybox (`sh`, `ls`, `cat`, `test`, `echo`).
fn busybox_layer(extra: &[Entry]) -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (apt-get install busybox-static)");
    let mut entries = vec![Entry::Dir("bin/"), Entry::File("bin/busybox", &busybox)];
    for applet in ["sh", "ls", "cat", "test", "echo"] {
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
        (vec!["run", "--rm", "--network", "bridge", img, "true"], 125, "is not supported", true),
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
    std::thread::sleep(Duration::from_millis(500));
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
