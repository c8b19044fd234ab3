//! The `netmachine` binary as a user runs it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use netmachine_adapters::crypto::RingVerifier;
use netmachine_adapters::text_forms::node_advert_from_text;
use netmachine_engines::ports::verify_signed;

const BIN: &str = env!("CARGO_BIN_EXE_netmachine");

fn netmachine(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NETMACHINE_HOME", home)
        .env_remove("NETMACHINE_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_subcommand_has_help() {
    let home = tempfile::tempdir().expect("tempdir");
    for args in [&["--help"][..], &["keygen", "--help"], &["advert", "--help"], &["run", "--help"]] {
        let out = netmachine(home.path(), args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{args:?}");
    }
}

#[test]
fn keygen_writes_a_private_key_and_will_not_overwrite_it() {
    let home = tempfile::tempdir().expect("tempdir");
    let first = netmachine(home.path(), &["keygen"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let key = home.path().join("node.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).expect("key").permissions().mode() & 0o777, 0o600);
    }
    let before = std::fs::read(&key).expect("key");
    let again = netmachine(home.path(), &["keygen"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    assert_eq!(std::fs::read(&key).expect("key"), before);
    let forced = netmachine(home.path(), &["keygen", "--force"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(&key).expect("key"), before);
}

#[test]
fn advert_prints_a_signed_advert_another_node_accepts() {
    let home = tempfile::tempdir().expect("tempdir");
    let config = home.path().join("node.toml");
    std::fs::write(&config, "name = \"alpha\"\n[[listen]]\naddress = \"quic://127.0.0.1:4100\"\nweight = 7\n")
        .expect("config");
    assert!(netmachine(home.path(), &["keygen"]).status.success());
    let out = netmachine(home.path(), &["--config", config.to_str().expect("utf-8"), "advert"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let advert = node_advert_from_text(text.trim()).expect("parses");
    verify_signed(&RingVerifier, &advert).expect("signed by the node");
    assert_eq!(advert.name.as_ref().map(|n| n.to_string()), Some("alpha".to_string()));
    assert_eq!(advert.addrs.len(), 1);
    assert_eq!(advert.addrs[0].weight, 7);
    let identity = String::from_utf8(netmachine(home.path(), &["keygen", "--force"]).stdout).expect("utf-8");
    assert_ne!(identity.trim(), advert.id.to_string(), "keygen --force makes a new identity");
}

#[test]
fn a_malformed_config_names_the_key_and_line() {
    let home = tempfile::tempdir().expect("tempdir");
    let config = home.path().join("bad.toml");
    std::fs::write(&config, "name = \"a\"\n\nmailbox_capacity = \"many\"\n").expect("config");
    let out = netmachine(home.path(), &["--config", config.to_str().expect("utf-8"), "run"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("line 3") && err.contains("mailbox_capacity"), "{err}");
    assert!(!home.path().join("node.key").exists(), "a bad config changes nothing");
}

#[cfg(unix)]
#[test]
fn a_key_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().expect("tempdir");
    assert!(netmachine(home.path(), &["keygen"]).status.success());
    let key = home.path().join("node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let out = netmachine(home.path(), &["advert"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

#[test]
fn a_key_file_with_wrong_content_is_refused() {
    let home = tempfile::tempdir().expect("tempdir");
    let key = home.path().join("node.key");
    std::fs::write(&key, b"-----BEGIN NONSENSE-----").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let out = netmachine(home.path(), &["run"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not hold a node key"), "{}", stderr(&out));
}

/// Starts `netmachine run`, waits (bounded) until it says it runs, stops it
/// with SIGTERM and returns its exit status and identity line.
#[cfg(unix)]
fn run_until_sigterm(home: &Path) -> (std::process::ExitStatus, String) {
    // Free ports, so the test never collides with a node on port 4100.
    let config = home.join("node.toml");
    std::fs::write(&config, "[[listen]]\naddress = \"quic://127.0.0.1:0\"\n").expect("config");
    let mut child = Command::new(BIN)
        .arg("run")
        .env("NETMACHINE_HOME", home)
        .env("NETMACHINE_CONFIG", &config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut running_line = None;
    while running_line.is_none() {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("node running") => running_line = Some(line),
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("the node did not report running within 60 s");
            }
        }
    }
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let status = child.wait().expect("reap");
    (status, running_line.unwrap_or_default())
}

#[cfg(unix)]
#[test]
fn run_makes_a_key_on_first_start_and_stops_cleanly_on_sigterm() {
    let home = tempfile::tempdir().expect("tempdir");
    let (status, first) = run_until_sigterm(home.path());
    assert!(status.success(), "SIGTERM is a clean stop, got {status}");
    assert!(home.path().join("node.key").exists());
    assert!(home.path().join("identities.redb").exists());
    let node_of = |line: &str| {
        line.split_whitespace().find(|w| w.starts_with("node=node1")).map(str::to_string).expect("identity logged")
    };
    let (status, second) = run_until_sigterm(home.path());
    assert!(status.success(), "SIGTERM is a clean stop on restart too, got {status}");
    assert_eq!(node_of(&first), node_of(&second), "the same key is used on restart");
}

/// The one-command demo: every node connects to every other, greetings and
/// topic events flow, and it stops by itself after --duration.
#[test]
fn devnet_connects_every_node_and_moves_messages() {
    let home = tempfile::tempdir().expect("tempdir");
    for protocol in ["quic", "tls-tcp"] {
        let out =
            netmachine(home.path(), &["devnet", "--nodes", "3", "--duration", "5", "--protocol", protocol, "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().expect("a status line per second");
        let status: serde_json::Value = serde_json::from_str(last).expect("json");
        let nodes = status["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 3);
        for (i, node) in nodes.iter().enumerate() {
            assert_eq!(node["peers"], 2, "{protocol}: node-{i} connected to both others: {last}");
            assert!(node["greetings"].as_u64().unwrap_or(0) > 0, "{protocol}: node-{i} got greetings: {last}");
            if i > 0 {
                assert!(node["events"].as_u64().unwrap_or(0) > 0, "{protocol}: node-{i} got topic events: {last}");
            }
        }
    }
}
