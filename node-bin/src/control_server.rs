//! Serves the control API (`docs/control-api.md`) on a Unix socket that
//! only this user can open.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use netmachine_adapters::control::{
    decode_body, encode_body, ControlRequest, ControlResponse, MessageInfo, PeerInfo, StatusInfo, TopicInfo,
    MAX_LINE_BYTES,
};
use netmachine_adapters::networked::NetworkedNode;
use netmachine_adapters::pending_slots::{PendingSlots, Slot};
use netmachine_adapters::runtime::{Delivery, EngineHandle, Inbound, SendOptions};
use netmachine_adapters::text_forms::{node_advert_from_text, node_advert_to_text};
use netmachine_domain::{
    DestinationIdentity, EngineIdentity, EngineMessage, EngineName, NodeIdentity, Permanence, ProtocolId,
    TopicIdentity, Trust,
};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::inbox::Inbox;
use crate::streams::SubscriptionStreams;

/// Control clients served at once once their request is read (streams
/// and sends waiting for their outcome hold theirs; `status` and `peers`
/// need none).
const MAX_CLIENTS: usize = 64;
/// Control clients whose request line is still being read. When all are
/// taken, the client waiting longest is pushed out: silent clients cannot
/// keep `status` from being served.
const MAX_READING: usize = 64;
/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `send` waits for the outcome of a message without an expiry.
const SEND_WAIT_NO_EXPIRY_MS: u64 = 60_000;
/// How long past a message's expiry `send` waits to hear it was given up.
/// A message in flight on a connection whose peer died silently comes
/// back, and is reported, only when that connection is found dead: QUIC's
/// idle timeout is 10 s.
const SEND_WAIT_PAST_EXPIRY_MS: u64 = 15_000;
/// The longest `send` waits, whatever the expiry.
const SEND_WAIT_MAX_MS: u64 = 600_000;
/// The protocol of bodies sent from the command line.
const CLI_PROTOCOL: &str = "netmachine/cli";

#[derive(Debug, Error)]
pub enum ControlServerError {
    #[error("a node is already serving the control socket {0}; stop it or set control_socket")]
    InUse(PathBuf),
    #[error("cannot open the control socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
}

/// Requests that need an engine which lives as long as the node: topics
/// are owned by the engine that created them.
enum OwnerRequest {
    CreateTopic(Vec<String>, oneshot::Sender<Result<TopicIdentity, String>>),
}

#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
}

struct Context {
    networked: NetworkedNode,
    inbox: Inbox,
    owner: mpsc::Sender<OwnerRequest>,
    next_engine: AtomicU64,
    streams: SubscriptionStreams,
    metrics_address: Option<std::net::SocketAddr>,
    domains: netmachine_adapters::domains::Domains,
}

impl ControlServer {
    pub async fn start(
        path: &Path,
        networked: NetworkedNode,
        inbox: Inbox,
        metrics_address: Option<std::net::SocketAddr>,
        domains: netmachine_adapters::domains::Domains,
    ) -> Result<Self, ControlServerError> {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlServerError::InUse(path.to_path_buf()));
        }
        // A socket file left by a node that died is removed.
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let listener =
            UnixListener::bind(path).map_err(|source| ControlServerError::Bind { path: path.to_path_buf(), source })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        let owner_engine = networked.node.register_engine("control").map_err(|e| ControlServerError::Bind {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (owner_tx, owner_rx) = mpsc::channel(16);
        tokio::spawn(run_owner(owner_engine, owner_rx));
        let context = Arc::new(Context {
            networked,
            inbox,
            owner: owner_tx,
            next_engine: AtomicU64::new(1),
            streams: SubscriptionStreams::default(),
            metrics_address,
            domains,
        });
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let clients = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
        let reading = Arc::new(PendingSlots::<()>::new(usize::MAX, MAX_READING));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = &mut stop_rx => return,
                };
                let Ok((stream, _)) = accepted else { continue };
                let Ok(slot) = reading.admit(()) else { continue };
                let context = Arc::clone(&context);
                let clients = Arc::clone(&clients);
                tokio::spawn(async move {
                    if let Err(err) = serve(stream, slot, &clients, &context).await {
                        tracing::debug!(%err, "control client ended");
                    }
                });
            }
        });
        Ok(Self { path: path.to_path_buf(), stop: Some(stop_tx) })
    }

    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The long-lived `control` engine: creates topics (and so owns them) and
/// drains whatever is sent to it so its mailbox never fills.
async fn run_owner(mut engine: EngineHandle, mut requests: mpsc::Receiver<OwnerRequest>) {
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(OwnerRequest::CreateTopic(tags, reply)) => {
                    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                    let _ = reply.send(engine.create_topic(&tags).await.map_err(|e| e.to_string()));
                }
                None => return,
            },
            inbound = engine.recv() => {
                if inbound.is_none() {
                    return;
                }
            }
        }
    }
}

async fn write_response(
    stream: &mut tokio::net::unix::OwnedWriteHalf,
    response: &ControlResponse,
) -> std::io::Result<()> {
    let mut line = serde_json::to_string(response).map_err(std::io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await
}

fn error(message: impl Into<String>) -> ControlResponse {
    ControlResponse::Error { message: message.into() }
}

async fn serve(
    stream: UnixStream,
    mut slot: Slot<()>,
    clients: &Arc<tokio::sync::Semaphore>,
    context: &Context,
) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::new(reader.take(MAX_LINE_BYTES as u64 + 1));
    let mut line = Vec::new();
    let read = tokio::select! {
        read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)) => read,
        _ = &mut slot.pushed_out => {
            let message = format!("{MAX_READING} newer control clients came while this one sent no request");
            return write_response(&mut writer, &error(message)).await;
        }
    };
    drop(slot);
    let n = match read {
        Ok(Ok(n)) => n,
        Ok(Err(err)) => return Err(err),
        Err(_) => {
            let message = format!("no complete request line within {} s", REQUEST_TIMEOUT.as_secs());
            return write_response(&mut writer, &error(message)).await;
        }
    };
    if n == 0 {
        return Ok(());
    }
    if line.len() > MAX_LINE_BYTES {
        let message = format!("a request line is at most {MAX_LINE_BYTES} bytes; bodies over 4 MiB cannot be sent");
        write_response(&mut writer, &error(message)).await?;
        // Read (and drop) what the client still sends, for a moment and up
        // to one more line's worth: a socket closed with unread input is
        // reset, and the client could lose the answer it was sent.
        let mut rest = reader.into_inner().into_inner().take(MAX_LINE_BYTES as u64);
        let _ = tokio::time::timeout(Duration::from_secs(1), tokio::io::copy(&mut rest, &mut tokio::io::sink())).await;
        return Ok(());
    }
    let request: ControlRequest = match std::str::from_utf8(&line).map(|text| serde_json::from_str(text.trim_end())) {
        Ok(Ok(request)) => request,
        Ok(Err(err)) => return write_response(&mut writer, &error(format!("not a control request: {err}"))).await,
        Err(_) => return write_response(&mut writer, &error("not a control request: not UTF-8")).await,
    };
    // Quick answers need no slot; the rest may wait on the node or stream
    // for long, and hold one of the few.
    let _permit = match request {
        ControlRequest::Status => {
            return write_response(&mut writer, &ControlResponse::Status(status(context))).await;
        }
        ControlRequest::Peers => {
            return write_response(&mut writer, &ControlResponse::Peers { peers: peers(context) }).await;
        }
        _ => match Arc::clone(clients).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let message = format!("{MAX_CLIENTS} control clients are being served already; try again shortly");
                return write_response(&mut writer, &error(message)).await;
            }
        },
    };
    match request {
        ControlRequest::Status => write_response(&mut writer, &ControlResponse::Status(status(context))).await,
        ControlRequest::Peers => write_response(&mut writer, &ControlResponse::Peers { peers: peers(context) }).await,
        ControlRequest::Send { to, body, ttl_ms, sign, wait } => {
            // A client that hangs up stops waiting for the outcome (and
            // frees its slot); the message itself stays queued.
            let response = tokio::select! {
                response = send(context, &to, &body, ttl_ms, sign, wait) => response,
                () = hung_up(&mut reader) => return Ok(()),
            };
            write_response(&mut writer, &response).await
        }
        ControlRequest::Publish { topic, body } => {
            let response = publish(context, &topic, &body).await;
            write_response(&mut writer, &response).await
        }
        ControlRequest::CreateTopic { tags } => {
            let (tx, rx) = oneshot::channel();
            let response = match context.owner.send(OwnerRequest::CreateTopic(tags, tx)).await {
                Ok(()) => match rx.await {
                    Ok(Ok(topic)) => ControlResponse::TopicCreated { topic: topic.to_string() },
                    Ok(Err(err)) => error(err),
                    Err(_) => error("the node is stopping"),
                },
                Err(_) => error("the node is stopping"),
            };
            write_response(&mut writer, &response).await
        }
        ControlRequest::AddPeer { advert } => {
            let response = add_peer(context, &advert).await;
            write_response(&mut writer, &response).await
        }
        ControlRequest::RemovePeer { node } => {
            let response = remove_peer(context, &node).await;
            write_response(&mut writer, &response).await
        }
        ControlRequest::SetTrust { node, trust } => {
            let response = set_trust(context, &node, trust).await;
            write_response(&mut writer, &response).await
        }
        ControlRequest::Unsubscribe { topic } => {
            let response = match topic.parse::<TopicIdentity>() {
                Ok(topic) => {
                    let streams = context.streams.end(&topic);
                    ControlResponse::Unsubscribed { topic: topic.to_string(), streams }
                }
                Err(err) => error(format!("{err}")),
            };
            write_response(&mut writer, &response).await
        }
        ControlRequest::Subscribe { topic } => subscribe(context, &topic, reader, writer).await,
        request @ (ControlRequest::DomainCreate { .. }
        | ControlRequest::DomainAdvert { .. }
        | ControlRequest::DomainJoin { .. }
        | ControlRequest::DomainLeave { .. }
        | ControlRequest::DomainApprove { .. }
        | ControlRequest::DomainRevoke { .. }
        | ControlRequest::DomainList
        | ControlRequest::DomainView { .. }
        | ControlRequest::DomainRequest { .. }) => {
            let response = crate::domain_control::handle(&context.domains, request).await;
            write_response(&mut writer, &response).await
        }
        ControlRequest::Inbox => stream_inbox(context, reader, writer).await,
    }
}

fn status(context: &Context) -> StatusInfo {
    let node = &context.networked.node;
    let transport = &context.networked.transport;
    let stats = node.stats();
    let advert = node.advert();
    let counters = transport.counters();
    let metrics = node.metrics();
    let core = &metrics.core;
    let drops = netmachine_engines::metrics::DropReason::ALL.iter().map(|r| core.counts.drops(*r)).sum();
    StatusInfo {
        node: node.identity().to_string(),
        name: advert.as_ref().and_then(|a| a.name.as_ref().map(ToString::to_string)),
        addresses: advert.as_ref().map(|a| a.addrs.iter().map(|w| w.address.to_string()).collect()).unwrap_or_default(),
        advert: advert.as_ref().and_then(|a| node_advert_to_text(a).ok()).unwrap_or_default(),
        engines: stats.engines,
        peers_connected: transport.connections().len(),
        topics: node
            .topic_summaries()
            .into_iter()
            .map(|(topic, local, remote)| TopicInfo {
                topic: topic.to_string(),
                local_subscribers: local,
                remote_subscribers: remote,
            })
            .collect(),
        local_delivered: stats.local_delivered,
        sent_remote: stats.sent_remote,
        inbound_delivered: stats.inbound_delivered,
        inbound_rejected: stats.inbound_rejected,
        undeliverable: stats.undeliverable,
        frames_sent: counters.frames_sent,
        frames_received: counters.frames_received,
        duplicates_dropped: counters.duplicates_dropped,
        violations: counters.violations,
        metrics: context.metrics_address.map(|a| format!("http://{a}/metrics")),
        connections_established: core.connections.established,
        connections_handshaking: core.connections.handshaking,
        connections_dialling: core.connections.dialling,
        queued_messages: core.permanent.queued_messages + core.ephemeral.queued_messages,
        window_messages: core.permanent.inflight_messages + core.ephemeral.inflight_messages,
        mailbox_depth: metrics.mailboxes.iter().map(|m| m.queued + m.parked).sum(),
        drops,
    }
}

fn peers(context: &Context) -> Vec<PeerInfo> {
    let transport = &context.networked.transport;
    let connections = transport.connections();
    transport
        .peer_summaries()
        .into_iter()
        .map(|p| {
            let connection = connections.iter().find(|c| c.peer == p.peer);
            PeerInfo {
                node: p.peer.to_string(),
                connected: p.connected,
                protocol: connection.map(|c| c.protocol.scheme().to_string()),
                remote: connection.and_then(|c| c.remote.map(|r| r.to_string())),
                permanent: p.permanent,
                queued: p.queued,
                inflight: p.inflight,
                failures: p.failures,
            }
        })
        .collect()
}

/// An engine for one request, detached when the request is done.
fn ephemeral_engine(context: &Context, prefix: &str) -> Result<EngineHandle, String> {
    let n = context.next_engine.fetch_add(1, Ordering::Relaxed);
    context.networked.node.register_engine(&format!("{prefix}-{n}")).map_err(|e| e.to_string())
}

fn protocol() -> ProtocolId {
    ProtocolId::new(CLI_PROTOCOL, 1).unwrap_or_else(|_| unreachable!("a valid constant protocol"))
}

/// `name@node1...` is an engine; `node1...` alone is that node's `inbox`
/// engine, the one every `netmachine` node runs for people to read.
fn parse_destination(to: &str) -> Result<DestinationIdentity, String> {
    if to.contains('@') {
        return to.parse::<EngineIdentity>().map(DestinationIdentity::Engine).map_err(|e| e.to_string());
    }
    let node = to.parse::<NodeIdentity>().map_err(|e| e.to_string())?;
    let inbox = EngineName::new(crate::inbox::INBOX_ENGINE).map_err(|e| e.to_string())?;
    Ok(DestinationIdentity::Engine(EngineIdentity::new(node, inbox)))
}

fn parse_node(text: &str) -> Result<NodeIdentity, String> {
    text.parse::<NodeIdentity>().map_err(|e| e.to_string())
}

/// How long `send` waits for an outcome: a little past the message's
/// expiry, when it has one, so that its giving up is reported.
fn send_wait(ttl_ms: Option<u64>) -> Duration {
    match ttl_ms {
        Some(ttl) => Duration::from_millis(ttl.saturating_add(SEND_WAIT_PAST_EXPIRY_MS).min(SEND_WAIT_MAX_MS)),
        None => Duration::from_millis(SEND_WAIT_NO_EXPIRY_MS),
    }
}

async fn send(context: &Context, to: &str, body: &str, ttl_ms: Option<u64>, sign: bool, wait: bool) -> ControlResponse {
    let dst = match parse_destination(to) {
        Ok(dst) => dst,
        Err(err) => return error(err),
    };
    let body = match decode_body(body) {
        Ok(body) => body,
        Err(err) => return error(err),
    };
    let mut engine = match ephemeral_engine(context, "cli") {
        Ok(engine) => engine,
        Err(err) => return error(err),
    };
    let options = SendOptions { ttl: ttl_ms.map(Duration::from_millis), sign, ..SendOptions::default() };
    if !wait {
        return match engine.send_with(dst, protocol(), body, options).await {
            Ok(id) => ControlResponse::Sent { id: id.0 },
            Err(err) => error(err.to_string()),
        };
    }
    let limit = send_wait(ttl_ms);
    let shown = dst.to_string();
    match engine.send_and_confirm(dst, protocol(), body, options, limit).await {
        Ok((id, Delivery::Local)) => {
            ControlResponse::Delivered { id: id.0, dst: shown, by: context.networked.node.identity().to_string() }
        }
        Ok((id, Delivery::Acknowledged { by })) => {
            ControlResponse::Delivered { id: id.0, dst: shown, by: by.to_string() }
        }
        Ok((id, Delivery::Undeliverable { reason })) => ControlResponse::Undeliverable { id: id.0, dst: shown, reason },
        Ok((id, Delivery::Waiting)) => ControlResponse::Pending {
            id: id.0,
            dst: shown,
            waited_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        },
        Err(err) => error(err.to_string()),
    }
}

async fn remove_peer(context: &Context, node: &str) -> ControlResponse {
    let peer = match parse_node(node) {
        Ok(peer) => peer,
        Err(err) => return error(err),
    };
    if let Err(err) = context.networked.node.set_permanence(peer, Permanence::Ephemeral).await {
        return error(err.to_string());
    }
    context.networked.transport.disconnect(peer);
    ControlResponse::PeerRemoved { node: peer.to_string() }
}

async fn set_trust(context: &Context, node: &str, trust: u8) -> ControlResponse {
    let peer = match parse_node(node) {
        Ok(peer) => peer,
        Err(err) => return error(err),
    };
    if peer == context.networked.node.identity() {
        return error("this is the node's own identity; its trust cannot change");
    }
    match context.networked.node.set_trust(peer, Trust(trust)).await {
        Ok(()) => ControlResponse::TrustSet { node: peer.to_string(), trust },
        Err(err) => error(err.to_string()),
    }
}

async fn publish(context: &Context, topic: &str, body: &str) -> ControlResponse {
    let topic: TopicIdentity = match topic.parse() {
        Ok(topic) => topic,
        Err(err) => return error(format!("{err}")),
    };
    let body = match decode_body(body) {
        Ok(body) => body,
        Err(err) => return error(err),
    };
    let mut engine = match ephemeral_engine(context, "cli") {
        Ok(engine) => engine,
        Err(err) => return error(err),
    };
    match engine.publish(topic, protocol(), body).await {
        Ok(id) => ControlResponse::Sent { id: id.0 },
        Err(err) => error(err.to_string()),
    }
}

async fn add_peer(context: &Context, text: &str) -> ControlResponse {
    let advert = match node_advert_from_text(text) {
        Ok(advert) => advert,
        Err(err) => return error(err.to_string()),
    };
    match context.networked.node.add_permanent_peer(advert).await {
        Ok(peer) => ControlResponse::PeerAdded { node: peer.to_string() },
        Err(err) => error(err.to_string()),
    }
}

fn message_info(message: &EngineMessage) -> MessageInfo {
    MessageInfo {
        src: message.src.to_string(),
        dst: message.dst.to_string(),
        id: message.id.0,
        protocol: message.protocol.to_string(),
        body: encode_body(message.body.as_bytes()),
        signed: message.sig.is_some(),
    }
}

/// Streams a topic's events until the client goes away.
type ClientReader = BufReader<tokio::io::Take<tokio::net::unix::OwnedReadHalf>>;

/// Resolves when the client closes its end (or sends anything more).
async fn hung_up(reader: &mut ClientReader) {
    let mut byte = [0u8; 1];
    let _ = reader.read(&mut byte).await;
}

async fn subscribe(
    context: &Context,
    topic: &str,
    mut reader: ClientReader,
    mut writer: tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<()> {
    let topic: TopicIdentity = match topic.parse() {
        Ok(topic) => topic,
        Err(err) => return write_response(&mut writer, &error(format!("{err}"))).await,
    };
    let mut engine = match ephemeral_engine(context, "subscriber") {
        Ok(engine) => engine,
        Err(err) => return write_response(&mut writer, &error(err)).await,
    };
    if let Err(err) = engine.subscribe(&topic) {
        return write_response(&mut writer, &error(err.to_string())).await;
    }
    let (stream_id, mut ended) = context.streams.open(topic);
    let result = async {
        write_response(&mut writer, &ControlResponse::Subscribed { topic: topic.to_string() }).await?;
        loop {
            let inbound = tokio::select! {
                inbound = engine.recv() => inbound,
                () = hung_up(&mut reader) => return Ok(()),
                streams = &mut ended => {
                    let streams = streams.unwrap_or(1);
                    let last = ControlResponse::Unsubscribed { topic: topic.to_string(), streams };
                    return write_response(&mut writer, &last).await;
                }
            };
            match inbound {
                Some(Inbound::Message(message)) => {
                    write_response(&mut writer, &ControlResponse::Message(message_info(&message))).await?;
                }
                Some(_) => {}
                None => return Ok(()),
            }
        }
    }
    .await;
    context.streams.close(stream_id);
    // Tells the publisher, if this was the node's last subscriber.
    if let Err(err) = engine.unsubscribe(&topic) {
        tracing::debug!(%topic, %err, "unsubscribing a closed stream");
    }
    result
}

async fn stream_inbox(
    context: &Context,
    mut reader: ClientReader,
    mut writer: tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<()> {
    let (waiting, mut live) = context.inbox.attach();
    write_response(&mut writer, &ControlResponse::Listening { engine: crate::inbox::INBOX_ENGINE.into() }).await?;
    for message in waiting {
        write_response(&mut writer, &ControlResponse::Message(message_info(&message))).await?;
    }
    loop {
        let message = tokio::select! {
            message = live.recv() => message,
            () = hung_up(&mut reader) => {
                context.inbox.give_back(live);
                return Ok(());
            }
        };
        let Some(message) = message else { return Ok(()) };
        if let Err(err) = write_response(&mut writer, &ControlResponse::Message(message_info(&message))).await {
            context.inbox.give_back(live);
            return Err(err);
        }
    }
}
