//! Logging in with real clients against a real `berth serve` with authentication on: the
//! docker engine (`docker login` with a password, with personal access tokens of users and
//! robots; push, pull, denied, logout) and skopeo (`--creds` with passwords and tokens).
//!
//! Docker login state lives in a per-test `DOCKER_CONFIG` directory and skopeo gets an auth
//! file of its own, so parallel tests never share one. Needs what `docker_e2e` and `skopeo_e2e`
//! need (docker daemon, busybox-static, skopeo, tar, curl); a missing tool is a failure, not a
//! skip.

mod common;

use std::process::Output;

use common::docker::{DockerClient, Images, docker, local_app, pushed_digest, require_tools};
use common::skopeo::{Layout, Skopeo};
use common::{ADMIN_PASSWORD, Berth, output_text};

/// Asserts that a docker command failed and said `word` (case-insensitive).
fn assert_refused(out: &Output, word: &str, what: &str) {
    let text = output_text(out);
    assert!(!out.status.success(), "{what} succeeded:\n{text}");
    assert!(text.to_lowercase().contains(word), "{what} failed without saying {word:?}:\n{text}");
    // docker retries errors it does not recognise as final for about a minute.
    assert!(!text.contains("Retrying in"), "docker retried a refusal (it did not read it as {word:?}):\n{text}");
}

#[test]
fn docker_login_with_password_push_pull_and_denied() {
    require_tools();
    let berth = Berth::start_auth();
    let host = berth.host();
    berth.cli_stdin(&["user", "add", "alice", "--password-stdin"], "alice-password-1\n");
    berth.cli(&["namespace", "create", "team"]);
    let mut images = Images::new();
    let (app, expected) = local_app(&berth, &mut images, "password");
    let mine = images.add(format!("{host}/alice/app:1"));
    let team = images.add(format!("{host}/team/app:1"));
    docker(&["tag", &app, &mine]);
    docker(&["tag", &app, &team]);

    let client = DockerClient::new(&host);
    // Not logged in: no push.
    assert_refused(&client.output(&["push", &mine]), "unauthorized", "anonymous push");
    assert_refused(&client.login("alice", "wrong-password"), "unauthorized", "login with a wrong password");

    let out = client.login("alice", "alice-password-1");
    assert!(out.status.success(), "docker login:\n{}", output_text(&out));
    assert!(output_text(&out).contains("Login Succeeded"));
    // docker keeps the refresh token the registry handed out, not the password.
    let stored = client.stored_auth();
    assert!(stored["identitytoken"].as_str().is_some_and(|t| t.starts_with("berth_")), "{stored}");
    let config = std::fs::read_to_string(client.config_dir().join("config.json")).unwrap();
    assert!(!config.contains("alice-password-1"), "the password is not stored");

    // Own namespace: push works.
    let out = client.run(&["push", &mine]);
    let digest = pushed_digest(&out);
    // A private organisation she is not a member of: docker's usual "denied".
    assert_refused(&client.output(&["push", &team]), "denied", "push to another namespace");
    // As a writer she may.
    berth.cli(&["namespace", "member", "team", "alice", "writer"]);
    client.run(&["push", &team]);

    // Pull back (the local copies removed so that the layers come from the registry).
    docker(&["rmi", &mine, &team]);
    let out = client.run(&["pull", &mine]);
    assert!(out.contains(&digest), "pull reports the pushed digest:\n{out}");
    assert_eq!(docker(&["run", "--rm", &mine]), expected);

    // Logged out: the private repositories are refused.
    client.logout();
    assert!(client.stored_auth().is_null(), "logout forgets the registry");
    docker(&["rmi", &mine]);
    for reference in [&mine, &team] {
        let out = client.output(&["pull", reference]);
        let text = output_text(&out).to_lowercase();
        assert!(!out.status.success(), "anonymous pull of {reference}:\n{text}");
        assert!(
            text.contains("denied") || text.contains("unauthorized"),
            "anonymous pull of {reference} refused for the wrong reason:\n{text}"
        );
    }
    // Once her namespace is public, anyone pulls it.
    berth.cli(&["namespace", "visibility", "alice", "public"]);
    client.run(&["pull", &mine]);
    assert_eq!(docker(&["run", "--rm", &mine]), expected);
    let out = client.output(&["pull", &team]);
    let text = output_text(&out).to_lowercase();
    assert!(!out.status.success(), "anonymous pull of {team}:\n{text}");
    assert!(text.contains("denied") || text.contains("unauthorized"), "{text}");
}

#[test]
fn docker_login_with_tokens_for_users_and_robots() {
    require_tools();
    let berth = Berth::start_auth();
    let host = berth.host();
    let reg_admin = DockerClient::new(&host);
    berth.cli_stdin(&["user", "add", "bob", "--password-stdin"], "bob-password-1");
    berth.cli(&["namespace", "create", "team"]);
    berth.cli(&["namespace", "create", "pub"]);
    berth.cli(&["namespace", "visibility", "pub", "public"]);
    berth.cli(&["namespace", "member", "team", "bob", "reader"]);
    let mut images = Images::new();
    let (app, expected) = local_app(&berth, &mut images, "tokens");
    let team1 = images.add(format!("{host}/team/app:1"));
    let team2 = images.add(format!("{host}/team/app:2"));
    let bobs = images.add(format!("{host}/bob/app:1"));
    let public = images.add(format!("{host}/pub/app:1"));
    for target in [&team1, &team2, &bobs, &public] {
        docker(&["tag", &app, target]);
    }

    // The admin publishes team/app:1 and pub/app:1.
    let out = reg_admin.login("admin", ADMIN_PASSWORD);
    assert!(out.status.success(), "{}", output_text(&out));
    reg_admin.run(&["push", &team1]);
    reg_admin.run(&["push", &public]);
    reg_admin.logout();

    // bob logs in with a pull-scoped personal access token.
    let out = berth.cli(&["token", "create", "--user", "bob", "--name", "laptop", "--scope", "pull"]);
    let pat = out.lines().nth(1).expect("secret on the second line").trim().to_string();
    let bob = DockerClient::new(&host);
    let out = bob.login("bob", &pat);
    assert!(out.status.success(), "docker login with a token:\n{}", output_text(&out));
    docker(&["rmi", &team1]);
    bob.run(&["pull", &team1]);
    assert_eq!(docker(&["run", "--rm", &team1]), expected);
    // A reader, and a pull-only token even in his own namespace.
    assert_refused(&bob.output(&["push", &team2]), "denied", "reader pushes to team");
    assert_refused(&bob.output(&["push", &bobs]), "denied", "pull-only token pushes");
    // With the token revoked, docker's stored login stops working.
    let id = out_token_id(&berth.cli(&["token", "list", "--user", "bob"]), "laptop");
    berth.cli(&["token", "revoke", &id]);
    docker(&["rmi", &team1]);
    assert_refused(&bob.output(&["pull", &team1]), "unauthorized", "pull with a revoked token");
    bob.logout();

    // A writer robot of the organisation pushes with its token, but only there.
    berth.cli(&["robot", "create", "team", "ci", "--role", "writer"]);
    let out = berth.cli(&["token", "create", "--user", "team+ci", "--name", "ci", "--scope", "push"]);
    let robot_token = out.lines().nth(1).unwrap().trim().to_string();
    let robot = DockerClient::new(&host);
    let out = robot.login("team+ci", &robot_token);
    assert!(out.status.success(), "robot login:\n{}", output_text(&out));
    robot.run(&["push", &team2]);
    assert_refused(&robot.output(&["push", &bobs]), "denied", "robot pushes outside its namespace");
    robot.logout();

    // Anonymous: the public namespace only.
    let anonymous = DockerClient::new(&host);
    docker(&["rmi", &public, &team2]);
    anonymous.run(&["pull", &public]);
    assert_eq!(docker(&["run", "--rm", &public]), expected);
    let out = anonymous.output(&["pull", &team2]);
    assert!(!out.status.success(), "anonymous pull of a private org:\n{}", output_text(&out));
}

/// The id of the token named `name` in `berth token list` output.
fn out_token_id(list: &str, name: &str) -> String {
    list.lines()
        .find(|l| l.split_whitespace().nth(2) == Some(name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no token {name} in\n{list}"))
        .to_string()
}

// ---- skopeo ------------------------------------------------------------------------------------

#[test]
fn skopeo_with_credentials_and_tokens() {
    let skopeo = Skopeo::new();
    let berth = Berth::start_auth();
    let host = berth.host();
    berth.cli_stdin(&["user", "add", "carol", "--password-stdin"], "carol-password-1\n");
    berth.cli(&["namespace", "create", "team"]);
    berth.cli(&["robot", "create", "team", "ci", "--role", "writer"]);
    let out = berth.cli(&["token", "create", "--user", "team+ci", "--name", "ci", "--scope", "push"]);
    let robot = format!("team+ci:{}", out.lines().nth(1).unwrap().trim());
    let carol = "carol:carol-password-1";

    let tmp = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(tmp.path().join("layout"));
    let image = layout.image("amd64", "hello from skopeo", false);
    layout.tag("latest", &image);
    let digest = image.digest;
    let src = layout.transport("latest");
    let carols = format!("docker://{host}/carol/app:1");
    let teams = format!("docker://{host}/team/app:1");

    // Into her own (private) namespace with a password.
    let out = skopeo.copy_in(&src, &carols, Some(carol), false);
    assert!(out.status.success(), "copy with --dest-creds:\n{}", output_text(&out));
    let inspected = skopeo.inspect_json(&carols, Some(carol));
    assert_eq!(inspected["Digest"], digest.as_str());
    let tags = skopeo.list_tags(&format!("docker://{host}/carol/app"), Some(carol));
    assert_eq!(tags, ["1"]);

    // Without credentials, or with wrong ones: refused.
    let out = skopeo.inspect(&carols, None, false);
    assert!(!out.status.success(), "anonymous inspect of a private repo:\n{}", output_text(&out));
    let out = skopeo.copy_in(&src, &format!("docker://{host}/carol/app:2"), None, false);
    assert!(!out.status.success(), "anonymous copy:\n{}", output_text(&out));
    let out = skopeo.copy_in(&src, &format!("docker://{host}/carol/app:2"), Some("carol:wrong-password"), false);
    assert!(!out.status.success(), "copy with a wrong password:\n{}", output_text(&out));
    let text = output_text(&out).to_lowercase();
    assert!(text.contains("unauthorized") || text.contains("authentication required"), "{text}");

    // The organisation: the robot's token may push there, carol (an outsider) may not.
    let out = skopeo.copy_in(&src, &teams, Some(&robot), false);
    assert!(out.status.success(), "robot copy:\n{}", output_text(&out));
    let inspected = skopeo.inspect_json(&teams, Some(&robot));
    assert_eq!(inspected["Digest"], digest.as_str());
    let out = skopeo.copy_in(&src, &format!("docker://{host}/team/app:2"), Some(carol), false);
    assert!(!out.status.success(), "outsider copy:\n{}", output_text(&out));
    let text = output_text(&out).to_lowercase();
    assert!(text.contains("denied") || text.contains("403"), "{text}");
    assert!(!skopeo.inspect(&teams, Some(carol), false).status.success(), "outsider inspect");
    // ... nor may the robot outside its organisation.
    let out = skopeo.copy_in(&src, &format!("docker://{host}/carol/app:3"), Some(&robot), false);
    assert!(!out.status.success(), "robot copy elsewhere:\n{}", output_text(&out));

    // carol's own personal access token works like her password, and copies back out.
    let out = berth.cli(&["token", "create", "--user", "carol", "--name", "skopeo", "--scope", "pull"]);
    let carol_token = format!("carol:{}", out.lines().nth(1).unwrap().trim());
    let back = tmp.path().join("back");
    let out = skopeo.copy_out(&carols, &format!("oci:{}:latest", back.display()), Some(&carol_token), false);
    assert!(out.status.success(), "copy out with a token:\n{}", output_text(&out));
    assert_eq!(common::skopeo::layout_ref(&back, "latest")["digest"], digest.as_str());
    let out = skopeo.copy_in(&src, &format!("docker://{host}/carol/app:4"), Some(&carol_token), false);
    assert!(!out.status.success(), "a pull token copies in:\n{}", output_text(&out));
}
