//! Clusters of real `netmachine` processes on loopback, driven through
//! their control API. Every process is killed when the cluster is dropped.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use netmachine_adapters::control::{
    ControlClient, ControlError, ControlRequest, ControlResponse, PeerInfo, StatusInfo,
};
use netmachine_domain::{NodeIdentity, TransportProtocol};

/// The `netmachine` binary next to the running test (cargo builds it for
/// the workspace's tests), or `$NETMACHINE_BIN`.
pub fn netmachine_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NETMACHINE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // Beside the running program (a binary), or one folder up (a test in deps/).
    let beside = exe.parent().map(|d| d.join("netmachine")).unwrap_or_default();
    let above = exe.parent().and_then(Path::parent).map(|d| d.join("netmachine")).unwrap_or_default();
    let binary = if beside.exists() { beside } else { above };
    assert!(
        binary.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, or build it with `cargo build -p netmachine-node`",
        binary.display()
    );
    binary
}

/// Ports a cluster's nodes listen on are drawn from here: below the range
/// the system hands out for outgoing connections and `bind(0)` (32768 and
/// up on Linux by default). A port from that range, found free and let
/// go, can be handed to another test's socket before the node binds it.
const NODE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port that was free a moment ago, drawn at random from
/// [`NODE_PORTS`] (any free one if none of 1000 draws is).
fn free_port(protocol: TransportProtocol) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let bind = |port: u16| {
        let at = SocketAddr::from(([127, 0, 0, 1], port));
        match protocol {
            TransportProtocol::Quic => UdpSocket::bind(at).and_then(|s| s.local_addr()).map(|a| a.port()),
            TransportProtocol::TlsTcp => TcpListener::bind(at).and_then(|s| s.local_addr()).map(|a| a.port()),
        }
    };
    let span = u64::from(NODE_PORTS.end - NODE_PORTS.start);
    for _ in 0..1000 {
        // A fresh hasher key per draw: randomness enough to spread the
        // draws of tests running at once.
        let draw = std::collections::hash_map::RandomState::new().build_hasher().finish() % span;
        let port = NODE_PORTS.start + u16::try_from(draw).unwrap_or(0);
        if let Ok(port) = bind(port) {
            return port;
        }
    }
    bind(0).expect("a free loopback port")
}

fn run_to_string(binary: &Path, home: &Path, config: &Path, args: &[&str]) -> String {
    let output = Command::new(binary)
        .args(args)
        .env("NETMACHINE_HOME", home)
        .env("NETMACHINE_CONFIG", config)
        .env_remove("NETMACHINE_CONTROL")
        .output()
        .expect("netmachine runs");
    assert!(output.status.success(), "netmachine {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// One node of a cluster.
#[derive(Debug)]
pub struct ProcessNode {
    pub index: usize,
    pub home: PathBuf,
    pub config: PathBuf,
    pub identity: NodeIdentity,
    pub advert: String,
    pub address: SocketAddr,
    /// Where it serves `/metrics`.
    pub metrics: SocketAddr,
    child: Option<Child>,
}

impl ProcessNode {
    pub fn control_socket(&self) -> PathBuf {
        self.home.join("control.sock")
    }

    pub fn log(&self) -> PathBuf {
        self.home.join("node.log")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process's resident memory now and at its peak, in bytes, as
    /// `/proc` reports them (`VmRSS`, `VmHWM`).
    pub fn memory(&self) -> (u64, u64) {
        let Some(child) = &self.child else { return (0, 0) };
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Bytes of its log so far.
    pub fn log_bytes(&self) -> u64 {
        std::fs::metadata(self.log()).map_or(0, |m| m.len())
    }

    /// Bytes of its identity store on disk.
    pub fn store_bytes(&self) -> u64 {
        std::fs::metadata(self.home.join("identities.redb")).map_or(0, |m| m.len())
    }
}

/// Several `netmachine run` processes, each a permanent peer of the others.
#[derive(Debug)]
pub struct Cluster {
    _dir: tempfile::TempDir,
    binary: PathBuf,
    pub protocol: TransportProtocol,
    pub nodes: Vec<ProcessNode>,
}

impl Cluster {
    /// Makes keys and configs for `n` nodes and starts them.
    pub async fn start(n: usize, protocol: TransportProtocol) -> Self {
        Self::start_with(n, protocol, |_| String::new()).await
    }

    /// As [`Cluster::start`], adding `extra(index)` (TOML tables) to each
    /// node's configuration.
    pub async fn start_with(n: usize, protocol: TransportProtocol, extra: impl Fn(usize) -> String) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let binary = netmachine_binary();
        let mut nodes = Vec::new();
        // The system may hand out a port it just handed out: no two nodes
        // (nor a node's two listeners) get the same one.
        let mut taken = std::collections::HashSet::new();
        let mut fresh_port = |protocol| {
            for _ in 0..1000 {
                let port = free_port(protocol);
                if taken.insert(port) {
                    return port;
                }
            }
            panic!("no distinct free loopback port in 1000 tries");
        };
        for index in 0..n {
            let home = dir.path().join(format!("node-{index}"));
            std::fs::create_dir_all(&home).expect("home");
            let config = home.join("node.toml");
            let address = SocketAddr::from(([127, 0, 0, 1], fresh_port(protocol)));
            let metrics = SocketAddr::from(([127, 0, 0, 1], fresh_port(TransportProtocol::TlsTcp)));
            std::fs::write(&config, listen_config(protocol, address)).expect("config");
            let identity = run_to_string(&binary, &home, &config, &["keygen"]).parse().expect("identity");
            let advert = run_to_string(&binary, &home, &config, &["advert"]);
            nodes.push(ProcessNode { index, home, config, identity, advert, address, metrics, child: None });
        }
        for node in &nodes {
            let peers: Vec<String> =
                nodes.iter().filter(|p| p.index != node.index).map(|p| format!("\"{}\"", p.advert)).collect();
            let text = format!(
                "peers = [{}]\nmetrics = \"{}\"\n{}{}",
                peers.join(", "),
                node.metrics,
                listen_config(protocol, node.address),
                extra(node.index)
            );
            std::fs::write(&node.config, text).expect("config");
        }
        let mut cluster = Self { _dir: dir, binary, protocol, nodes };
        for index in 0..n {
            cluster.launch(index).await;
        }
        cluster
    }

    /// Starts (or restarts) node `index` and waits until it answers.
    pub async fn launch(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.log()).expect("log file");
        let child = Command::new(&self.binary)
            .arg("run")
            .env("NETMACHINE_HOME", &node.home)
            .env("NETMACHINE_CONFIG", &node.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn netmachine");
        node.child = Some(child);
        let socket = node.control_socket();
        for _ in 0..600 {
            if let Ok(ControlResponse::Status(_)) = ControlClient::call(&socket, &ControlRequest::Status).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node-{index} did not answer on its control socket within 30 s; log:\n{}", self.log_of(index));
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log_of(&self, index: usize) -> String {
        std::fs::read_to_string(self.nodes[index].log()).unwrap_or_default()
    }

    pub async fn call(&self, index: usize, request: ControlRequest) -> ControlResponse {
        ControlClient::call(&self.nodes[index].control_socket(), &request).await.expect("control call")
    }

    /// An HTTP GET of `path` on node `index`'s metrics address: the status
    /// line and the body.
    pub async fn http_get(&self, index: usize, path: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.nodes[index].metrics).await.expect("metrics listener");
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("request written");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .expect("answered within 10 s")
            .expect("answer read");
        let answer = String::from_utf8(answer).expect("utf-8");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        (head.lines().next().unwrap_or_default().to_string(), body.to_string())
    }

    /// Node `index`'s metrics, scraped over HTTP.
    pub async fn scrape(&self, index: usize) -> Metrics {
        let (status, body) = self.http_get(index, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        Metrics(body)
    }

    pub async fn status(&self, index: usize) -> StatusInfo {
        match self.call(index, ControlRequest::Status).await {
            ControlResponse::Status(status) => status,
            other => panic!("expected a status, got {other:?}"),
        }
    }

    pub async fn peers(&self, index: usize) -> Vec<PeerInfo> {
        match self.call(index, ControlRequest::Peers).await {
            ControlResponse::Peers { peers } => peers,
            other => panic!("expected peers, got {other:?}"),
        }
    }

    /// Opens a streaming request (`subscribe`, `inbox`) and returns the
    /// client after its first answer.
    pub async fn open_stream(&self, index: usize, request: ControlRequest) -> Result<ControlClient, ControlError> {
        let mut client = ControlClient::connect(&self.nodes[index].control_socket()).await?;
        client.send(&request).await?;
        match client.next().await? {
            ControlResponse::Subscribed { .. } | ControlResponse::Listening { .. } => Ok(client),
            other => Err(ControlError::BadResponse(format!("{other:?}"))),
        }
    }

    /// Waits (at most `seconds`) until `check` holds for node `index`'s
    /// status and peers.
    pub async fn wait_until(
        &self,
        index: usize,
        seconds: u64,
        what: &str,
        check: impl Fn(&StatusInfo, &[PeerInfo]) -> bool,
    ) {
        for _ in 0..seconds * 10 {
            let status = self.status(index).await;
            let peers = self.peers(index).await;
            if check(&status, &peers) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("node-{index}: {what} did not happen within {seconds} s; log:\n{}", self.log_of(index));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }
}

/// A scrape's text.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of one series, named as the text names it (with its
    /// labels, in order); panics when the text has no such series.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or_else(|| panic!("no series {series} in\n{}", self.0))
    }

    /// The value of one series, if the text has it (an engine's row
    /// appears with its first message).
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse().ok())
    }
}

fn listen_config(protocol: TransportProtocol, address: SocketAddr) -> String {
    format!("[[listen]]\naddress = \"{}://{address}\"\n", protocol.scheme())
}
