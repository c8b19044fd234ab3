//! End to end: twelve real `netmachine` processes on loopback form two
//! overlapping domains with the command line, one with a pre-shared key;
//! an outsider's request is answered; four members are killed with
//! SIGKILL and the survivors' overlays repair; a killed member restarts
//! and is back in its domains without joining again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use netmachine_adapters::control::{ControlRequest, ControlResponse, DomainInfo};
use netmachine_domain::TransportProtocol;
use netmachine_harness::cluster::{netmachine_binary, Cluster};

/// Runs `netmachine --control <node's socket> <args>`: whether it
/// succeeded, its standard output and its standard error.
fn cli(cluster: &Cluster, index: usize, args: &[&str]) -> (bool, String, String) {
    let socket = cluster.nodes[index].control_socket();
    let output = Command::new(netmachine_binary())
        .arg("--control")
        .arg(&socket)
        .args(args)
        .env_remove("NETMACHINE_CONFIG")
        .output()
        .expect("netmachine runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    )
}

fn cli_ok(cluster: &Cluster, index: usize, args: &[&str]) -> String {
    let (ok, out, err) = cli(cluster, index, args);
    assert!(ok, "node-{index}: netmachine {args:?} failed: {err}");
    out
}

async fn domains_of(cluster: &Cluster, index: usize) -> Vec<DomainInfo> {
    match cluster.call(index, ControlRequest::DomainList).await {
        ControlResponse::Domains { domains } => domains,
        other => panic!("node-{index}: expected domains, got {other:?}"),
    }
}

/// Whether the active views of `members` (alive) for `domain` form one
/// connected graph that names no node outside them.
async fn one_overlay(cluster: &Cluster, domain: &str, members: &[usize]) -> bool {
    let id_of: BTreeMap<String, usize> = members.iter().map(|i| (cluster.nodes[*i].identity.to_string(), *i)).collect();
    let mut edges: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for &i in members {
        let Some(info) = domains_of(cluster, i).await.into_iter().find(|d| d.domain == domain) else { return false };
        if info.active.is_empty() {
            return false;
        }
        for peer in &info.active {
            let Some(&j) = id_of.get(peer) else { return false };
            edges.entry(i).or_default().insert(j);
            edges.entry(j).or_default().insert(i);
        }
    }
    let mut seen = BTreeSet::from([members[0]]);
    let mut stack = vec![members[0]];
    while let Some(i) = stack.pop() {
        for &j in edges.get(&i).into_iter().flatten() {
            if seen.insert(j) {
                stack.push(j);
            }
        }
    }
    seen.len() == members.len()
}

async fn wait_for_one_overlay(cluster: &Cluster, domain: &str, members: &[usize], seconds: u64, what: &str) {
    for _ in 0..seconds * 2 {
        if one_overlay(cluster, domain, members).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let views: Vec<(usize, Vec<DomainInfo>)> = futures_free_collect(cluster, members).await;
    panic!("{what}: the members {members:?} of {domain} are not one overlay within {seconds} s: {views:#?}");
}

async fn futures_free_collect(cluster: &Cluster, members: &[usize]) -> Vec<(usize, Vec<DomainInfo>)> {
    let mut out = Vec::new();
    for &i in members {
        out.push((i, domains_of(cluster, i).await));
    }
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("file written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_nodes_two_domains_join_repair_and_restart() {
    let mut cluster = Cluster::start(12, TransportProtocol::Quic).await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let psk = scratch.path().join("psk");
    let wrong = scratch.path().join("wrong");
    write(&psk, b"the domain's shared secret");
    write(&wrong, b"a guess");

    // Domain A: open, owned by node-0, members 0..=7.
    // Domain B: pre-shared key, owned by node-1, members 1 and 4..=11.
    let advert_a = cli_ok(&cluster, 0, &["domain", "create"]);
    let psk_arg = psk.display().to_string();
    let advert_b = cli_ok(&cluster, 1, &["domain", "create", "--policy", "psk", "--psk-file", &psk_arg]);
    let a_file = scratch.path().join("a.advert");
    write(&a_file, advert_a.as_bytes());
    let a_at = format!("@{}", a_file.display());
    let members_a: Vec<usize> = (0..=7).collect();
    let members_b: Vec<usize> = std::iter::once(1).chain(4..=11).collect();
    for &i in members_a.iter().filter(|i| **i != 0) {
        let out = cli_ok(&cluster, i, &["domain", "join", &a_at]);
        assert!(out.starts_with("joined"), "{out}");
    }
    // A wrong key is refused, with the answer any refusal gets.
    let wrong_arg = wrong.display().to_string();
    let (ok, _, err) = cli(&cluster, 11, &["domain", "join", &advert_b, "--psk-file", &wrong_arg]);
    assert!(!ok, "a wrong key must not admit");
    assert!(err.contains("does not admit this node"), "{err}");
    assert!(domains_of(&cluster, 11).await.is_empty(), "no state changed");
    for &i in members_b.iter().filter(|i| **i != 1) {
        let out = cli_ok(&cluster, i, &["domain", "join", &advert_b, "--psk-file", &psk_arg]);
        assert!(out.starts_with("joined"), "{out}");
    }
    let json = cli_ok(&cluster, 5, &["--json", "domain", "list"]);
    assert_eq!(json.matches("\"domain\":").count(), 2, "node-5 is in both domains: {json}");

    // An outsider (node-9 is not in A) asks a member A's advert names.
    assert_eq!(cli_ok(&cluster, 9, &["domain", "request", &a_at, "echo", "are you there?"]), "are you there?");
    let (ok, _, err) = cli(&cluster, 9, &["domain", "request", &a_at, "no-such-protocol", "x"]);
    assert!(!ok && err.contains("no engine on the member serves this protocol"), "{err}");

    let owned =
        |infos: Vec<DomainInfo>| infos.into_iter().find(|d| d.owner).map(|d| d.domain).expect("an owned domain");
    let domain_a = owned(domains_of(&cluster, 0).await);
    let domain_b = owned(domains_of(&cluster, 1).await);
    wait_for_one_overlay(&cluster, &domain_a, &members_a, 60, "after the joins").await;
    wait_for_one_overlay(&cluster, &domain_b, &members_b, 60, "after the joins").await;
    let before: Vec<DomainInfo> = domains_of(&cluster, 6).await;

    // Four members die at once, two of them in both domains.
    let killed = [2, 3, 6, 7];
    for &i in &killed {
        cluster.kill(i);
    }
    let survivors_a: Vec<usize> = members_a.iter().copied().filter(|i| !killed.contains(i)).collect();
    let survivors_b: Vec<usize> = members_b.iter().copied().filter(|i| !killed.contains(i)).collect();
    wait_for_one_overlay(&cluster, &domain_a, &survivors_a, 90, "after four were killed").await;
    wait_for_one_overlay(&cluster, &domain_b, &survivors_b, 90, "after four were killed").await;

    // A killed member comes back with what it kept on disk: the same
    // certificates, no join.
    cluster.launch(6).await;
    let after = domains_of(&cluster, 6).await;
    let expiries =
        |infos: &[DomainInfo]| infos.iter().map(|d| (d.domain.clone(), d.expires_ms)).collect::<BTreeMap<_, _>>();
    assert_eq!(expiries(&after), expiries(&before), "back in both domains with the certificates it had");
    let log = cluster.log_of(6);
    assert!(log.contains("back in the domain"), "{log}");
    let mut back_a = survivors_a.clone();
    back_a.push(6);
    wait_for_one_overlay(&cluster, &domain_a, &back_a, 60, "after the restart").await;
}
