//! The control API and every control command of the binary, against real
//! `netmachine run` processes on loopback: what works, and what each
//! mistake is told.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_netmachine");

/// A `netmachine run` in its own home, stopped when dropped.
struct RunningNode {
    home: tempfile::TempDir,
    child: Option<Child>,
}

impl RunningNode {
    fn start() -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::write(home.path().join("node.toml"), "[[listen]]\naddress = \"quic://127.0.0.1:0\"\n")
            .expect("config");
        let mut node = Self { home, child: None };
        node.launch();
        node
    }

    fn launch(&mut self) {
        let child = Command::new(BIN)
            .arg("run")
            .env("NETMACHINE_HOME", self.home.path())
            .env("NETMACHINE_CONFIG", self.home.path().join("node.toml"))
            // `run` must ignore this: it is for the commands only.
            .env("NETMACHINE_CONTROL", self.home.path().join("never.sock"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.cli(&["status"]).status.success() {
            assert!(Instant::now() < deadline, "the node did not answer within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the node with SIGTERM and waits for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn socket(&self) -> PathBuf {
        self.home.path().join("control.sock")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("NETMACHINE_HOME", self.home.path())
            .env("NETMACHINE_CONFIG", self.home.path().join("node.toml"))
            .env_remove("NETMACHINE_CONTROL")
            .env_remove("RUST_LOG");
        command
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the binary runs")
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs a command that must fail; returns its standard error.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(!out.status.success(), "{args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    }

    fn identity(&self) -> String {
        let status: serde_json::Value = serde_json::from_str(&self.ok(&["status", "--json"])).expect("json");
        status["node"].as_str().expect("node").to_string()
    }

    fn advert(&self) -> String {
        let status: serde_json::Value = serde_json::from_str(&self.ok(&["status", "--json"])).expect("json");
        status["advert"].as_str().expect("advert").to_string()
    }

    /// Sends one raw line to the control socket and reads the answer.
    fn raw(&self, line: &[u8]) -> serde_json::Value {
        let mut stream = UnixStream::connect(self.socket()).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        stream.write_all(line).expect("write");
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).expect("an answer");
        serde_json::from_str(&answer).expect("a JSON answer")
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A streaming command (`subscribe`, `inbox`) whose lines arrive on a channel.
struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Streaming {
    fn start(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn next(&self) -> String {
        self.lines.recv_timeout(Duration::from_secs(30)).expect("a line within 30 s")
    }

    /// Waits (bounded) for the command to exit by itself.
    fn exits(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message_of(answer: &serde_json::Value) -> String {
    assert_eq!(answer["type"], "error", "{answer}");
    answer["message"].as_str().expect("message").to_string()
}

#[test]
fn control_api_mistakes_are_answered_with_what_is_wrong() {
    let node = RunningNode::start();
    let me = node.identity();
    assert!(message_of(&node.raw(b"not json\n")).contains("not a control request"));
    assert!(message_of(&node.raw(b"{\"cmd\":\"reboot\"}\n")).contains("unknown variant `reboot`"));
    assert!(message_of(&node.raw(b"\xff\xfe\n")).contains("not UTF-8"));
    let bad_destination = node.raw(b"{\"cmd\":\"send\",\"to\":\"nobody\",\"body\":\"\"}\n");
    assert!(message_of(&bad_destination).contains("node1"), "{bad_destination}");
    let bad_base64 = format!("{{\"cmd\":\"send\",\"to\":\"{me}\",\"body\":\"%%%\"}}\n");
    assert!(message_of(&node.raw(bad_base64.as_bytes())).contains("not base64"));
    let unknown_topic = netmachine_domain::TopicIdentity::ed25519([7; 32]).to_string();
    let unknown_topic = unknown_topic.as_str();
    let publish = format!("{{\"cmd\":\"publish\",\"topic\":\"{unknown_topic}\",\"body\":\"\"}}\n");
    let answer = node.raw(publish.as_bytes());
    assert!(message_of(&answer).contains(unknown_topic), "{answer}");
    let subscribe = format!("{{\"cmd\":\"subscribe\",\"topic\":\"{unknown_topic}\"}}\n");
    let answer = node.raw(subscribe.as_bytes());
    assert!(message_of(&answer).contains("unknown topic") || message_of(&answer).contains(unknown_topic), "{answer}");
    let answer = node.raw(b"{\"cmd\":\"add_peer\",\"advert\":\"nodeadvert1garbage\"}\n");
    assert!(message_of(&answer).contains("node advert text"), "{answer}");
    let answer = node.raw(b"{\"cmd\":\"add_peer\",\"advert\":\"hello\"}\n");
    assert!(message_of(&answer).contains("netmachine advert"), "{answer}");
    let answer = node.raw(format!("{{\"cmd\":\"set_trust\",\"node\":\"{me}\",\"trust\":0}}\n").as_bytes());
    assert!(message_of(&answer).contains("own identity"), "{answer}");
    let answer = node.raw(b"{\"cmd\":\"set_trust\",\"node\":\"node1x\",\"trust\":300}\n");
    assert!(message_of(&answer).contains("not a control request"), "{answer}");
    // A line over the limit is refused as such, without being parsed.
    let mut long = vec![b'x'; 8 * 1024 * 1024 + 16];
    long.push(b'\n');
    assert!(message_of(&node.raw(&long)).contains("at most"));
    // The node still serves.
    node.ok(&["status"]);
}

/// Guards the control API's slots: clients that connect and say nothing
/// cannot keep `status` from being served, and the oldest of them are told
/// why they were let go. (Before, 64 silent clients held every slot for
/// 30 s.)
#[test]
fn status_is_served_while_silent_clients_stall() {
    let node = RunningNode::start();
    let silent: Vec<UnixStream> = (0..100).map(|_| UnixStream::connect(node.socket()).expect("connect")).collect();
    let mut stream = UnixStream::connect(node.socket()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    stream.write_all(b"{\"cmd\":\"status\"}\n").expect("write");
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).expect("status answered while 100 clients stall");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(answer["type"], "status", "{answer}");
    // The oldest silent client was pushed out to make room, and told so
    // (not timed out: that answer would say so).
    let mut oldest = silent.into_iter().next().expect("one");
    oldest.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut told = String::new();
    BufReader::new(&mut oldest).read_line(&mut told).expect("told");
    assert!(told.contains("newer control clients"), "{told}");
}

#[test]
fn every_control_command_works_from_the_binary() {
    let a = RunningNode::start();
    let b = RunningNode::start();
    let (a_id, b_id) = (a.identity(), b.identity());
    assert!(a.ok(&["peers"]).contains("no peers"));
    assert!(a.ok(&["add-peer", &b.advert()]).contains(&b_id));
    b.ok(&["add-peer", &a.advert()]);
    let peers: serde_json::Value = serde_json::from_str(&a.ok(&["peers", "--json"])).expect("json");
    assert_eq!(peers["peers"][0]["node"], b_id.as_str());
    assert_eq!(peers["peers"][0]["permanent"], true);

    // Unicast to B's inbox, waiting for the outcome.
    let inbox = Streaming::start(b.command(&["inbox"]));
    let delivered = a.ok(&["send", &b_id, "hello b"]);
    assert!(delivered.starts_with("delivered message") && delivered.contains(&b_id), "{delivered}");
    assert!(inbox.next().ends_with("hello b"));
    let queued = a.ok(&["send", "--no-wait", &format!("inbox@{b_id}"), "again"]);
    assert!(queued.starts_with("queued message"), "{queued}");
    assert!(inbox.next().ends_with("again"));
    let missing = a.fails(&["send", &format!("ghost@{b_id}"), "to nobody"]);
    assert!(missing.contains("not delivered") && missing.contains("no such engine"), "{missing}");
    let json: serde_json::Value = serde_json::from_str(&a.ok(&["send", "--json", &a_id, "to myself"])).expect("json");
    assert_eq!(json["type"], "delivered");
    assert_eq!(json["by"], a_id.as_str());

    // A topic on A, a subscriber on B, and an unsubscribe that ends it.
    let topic = a.ok(&["create-topic", "news"]);
    assert!(topic.starts_with("topic1"), "{topic}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.ok(&["status"]).contains(&topic) {
        assert!(Instant::now() < deadline, "B did not learn the topic");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut subscriber = Streaming::start(b.command(&["subscribe", &topic]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: serde_json::Value = serde_json::from_str(&a.ok(&["status", "--json"])).expect("json");
        if status["topics"].as_array().is_some_and(|t| t.iter().any(|t| t["remote_subscribers"] == 1)) {
            break;
        }
        assert!(Instant::now() < deadline, "A did not hear of B's subscription");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.ok(&["publish", &topic, "first event"]).starts_with("queued message"));
    assert!(subscriber.next().ends_with("first event"));
    assert!(b.ok(&["unsubscribe", &topic]).contains("1 streams ended"));
    assert!(subscriber.exits(), "the subscribe command ends when unsubscribed");
    let bad_topic = b.fails(&["unsubscribe", "topic1nonsense"]);
    assert!(bad_topic.contains("topic"), "{bad_topic}");

    // Trust, ban, unban, remove.
    assert!(a.ok(&["trust", &b_id, "200"]).contains("set to 200"));
    assert!(a.ok(&["ban", &b_id]).contains("banned"));
    let banned = a.fails(&["send", &b_id, "while banned"]);
    assert!(banned.contains("banned"), "{banned}");
    assert!(a.ok(&["unban", &b_id]).contains("set to 128"));
    assert!(a.ok(&["send", &b_id, "after the ban"]).starts_with("delivered"));
    assert!(a.ok(&["remove-peer", &b_id]).contains("no longer a permanent peer"));
    let peers: serde_json::Value = serde_json::from_str(&a.ok(&["peers", "--json"])).expect("json");
    assert_eq!(peers["peers"][0]["permanent"], false);
    let bad_node = a.fails(&["ban", "node1nonsense"]);
    assert!(bad_node.contains("node"), "{bad_node}");
    assert!(a.fails(&["trust", &b_id, "256"]).contains("256"));
}

#[test]
fn bans_and_permanent_peers_survive_a_restart() {
    let mut a = RunningNode::start();
    let b = RunningNode::start();
    let b_id = b.identity();
    a.ok(&["add-peer", &b.advert()]);
    let other = tempfile::tempdir().expect("tempdir");
    let stranger = a.ok(&["keygen", "--key", other.path().join("k").to_str().expect("utf-8")]);
    a.ok(&["ban", &stranger]);
    a.stop();
    a.launch();
    let peers: serde_json::Value = serde_json::from_str(&a.ok(&["peers", "--json"])).expect("json");
    let b_entry = peers["peers"].as_array().and_then(|p| p.iter().find(|p| p["node"] == b_id.as_str())).cloned();
    assert_eq!(b_entry.map(|p| p["permanent"].clone()), Some(serde_json::Value::Bool(true)), "{peers}");
    assert!(a.fails(&["send", &stranger, "hello"]).contains("banned"));
}

#[test]
fn an_oversize_key_file_is_refused() {
    let home = tempfile::tempdir().expect("tempdir");
    let key = home.path().join("node.key");
    std::fs::write(&key, vec![b'k'; 5000]).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let out = Command::new(BIN)
        .arg("advert")
        .env("NETMACHINE_HOME", home.path())
        .env_remove("NETMACHINE_CONFIG")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("5000 bytes") && err.contains("node.key"), "{err}");
}

#[test]
fn a_foreign_identity_store_is_refused_and_left_as_it_was() {
    let home = tempfile::tempdir().expect("tempdir");
    let store = home.path().join("identities.redb");
    let notes = b"not a database\n".repeat(500);
    std::fs::write(&store, &notes).expect("write");
    std::fs::write(home.path().join("node.toml"), "[[listen]]\naddress = \"quic://127.0.0.1:0\"\n").expect("config");
    let mut child = Command::new(BIN)
        .arg("run")
        .env("NETMACHINE_HOME", home.path())
        .env("NETMACHINE_CONFIG", home.path().join("node.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut err).expect("stderr");
    assert!(!status.success());
    assert!(err.contains("identities.redb"), "{err}");
    assert_eq!(std::fs::read(&store).expect("read"), notes);
}

#[test]
fn the_control_variable_moves_commands_but_not_the_node() {
    let node = RunningNode::start();
    let elsewhere = node.home.path().join("elsewhere.sock");
    // `run` ignores NETMACHINE_CONTROL: the node above serves the default
    // socket even though commands below are pointed elsewhere.
    assert!(node.socket().exists());
    let out = node.command(&["status"]).env("NETMACHINE_CONTROL", &elsewhere).output().expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("elsewhere.sock"));
    let out = node
        .command(&["status", "--control", node.socket().to_str().expect("utf-8")])
        .env("NETMACHINE_CONTROL", &elsewhere)
        .output()
        .expect("runs");
    assert!(out.status.success(), "the flag beats the variable");
    assert!(!node.home.path().join("never.sock").exists(), "run served the default socket only");
}
