//! Domains for an embedder and for the `netmachine` binary: create a
//! domain (its key and signed advert), join one, leave, approve or revoke
//! members, answer outsiders' requests for a protocol, and send one. A
//! long-lived engine, `domains`, talks to the node's domain engine and
//! keeps every membership on disk ([`files`]) as it changes, so that a
//! restarted node is back in its domains without asking anyone.

pub mod files;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use netmachine_domain::{
    Advert, DestinationIdentity, DomainAdvert, DomainAdvertBody, DomainIdentity, JoinPolicy, MembershipCertificate,
    MembershipRules, MessageId, NodeIdentity, ProtocolId,
};
use netmachine_engines::domain::messages::MAX_PSK_BYTES;
use netmachine_engines::domain::{Command, DomainEngine, Outcome, DOMAIN_PROTOCOL, DOMAIN_VERSION};
use netmachine_engines::ports::Signer;
use netmachine_engines::topology::Topology;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::crypto::Ed25519Keys;
use crate::runtime::{EngineHandle, Inbound, Node};
pub use files::{DomainFiles, DomainFilesError, StoredDomain};

/// The protocol every member answers by echoing the request: a way to see
/// that external requests reach a domain.
pub const ECHO_PROTOCOL: &str = "echo";
/// How long a join may take: three approvers asked, 10 s each.
const JOIN_WAIT: Duration = Duration::from_secs(35);
/// How long any other command may take.
const COMMAND_WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Error)]
pub enum DomainError {
    #[error("the node has stopped")]
    Stopped,
    #[error("{0}")]
    Refused(String),
    #[error("no answer from the domain engine in {0:?}")]
    TimedOut(Duration),
    #[error(transparent)]
    Files(#[from] DomainFilesError),
    #[error("cannot make a domain key: {0}")]
    Key(#[from] crate::crypto::KeyError),
    #[error("this node does not hold the key of domain {0}: only its owner can sign its adverts")]
    NotOwner(DomainIdentity),
    #[error("this node is not in domain {0}")]
    NotMember(DomainIdentity),
    #[error("invalid domain settings: {0}")]
    Invalid(#[from] netmachine_domain::ValidationError),
    #[error(transparent)]
    Engine(#[from] crate::runtime::NodeError),
}

/// How a new domain admits members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySpec {
    Open,
    PreSharedKey(Vec<u8>),
    AllowList(Vec<NodeIdentity>),
    OwnerApproves,
}

/// Answers an outsider's request for a protocol: the request's body in,
/// the answer's out.
pub type Handler = Arc<dyn Fn(&IncomingRequest) -> Vec<u8> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct IncomingRequest {
    pub domain: DomainIdentity,
    pub requester: NodeIdentity,
    pub protocol: String,
    pub body: Vec<u8>,
}

/// One domain as this node holds it.
#[derive(Debug, Clone)]
pub struct DomainSummary {
    pub advert: DomainAdvert,
    pub certificate: MembershipCertificate,
    pub approver: bool,
    pub owner: bool,
    pub active: Vec<NodeIdentity>,
    pub passive: Vec<NodeIdentity>,
}

enum Request {
    Command { command: Box<Command>, psk: Option<Vec<u8>>, reply: oneshot::Sender<Outcome> },
    Serve { domain: DomainIdentity, protocol: String, handler: Handler, reply: oneshot::Sender<Outcome> },
}

/// The handle to a node's domains.
#[derive(Clone)]
pub struct Domains {
    node: Node,
    files: Option<DomainFiles>,
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Domains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domains").field("node", &self.node.identity()).finish_non_exhaustive()
    }
}

fn protocol() -> ProtocolId {
    ProtocolId::new(DOMAIN_PROTOCOL, DOMAIN_VERSION).unwrap_or_else(|_| unreachable!("a valid constant protocol"))
}

impl Domains {
    /// Starts the `domains` engine of `node`, and brings back the domains
    /// kept in `files`: each membership whose certificate still holds, and
    /// each domain this node owns.
    pub async fn start(node: &Node, files: Option<DomainFiles>) -> Result<Self, DomainError> {
        let engine = node.register_engine("domains")?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(run(engine, rx, files.clone()));
        let domains = Self { node: node.clone(), files, requests: tx };
        domains.command(Command::Watch, None, COMMAND_WAIT).await?;
        domains.restore().await?;
        Ok(domains)
    }

    async fn restore(&self) -> Result<(), DomainError> {
        let Some(files) = &self.files else { return Ok(()) };
        for stored in files.load_all()? {
            // An owner that left keeps its key, and stays out until it
            // joins again (the mark is written before the certificate is
            // removed, so a crash between the two leaves it out too).
            if stored.left {
                continue;
            }
            let domain = stored.advert.id;
            let approver = stored.advert.rules.is_approver(&self.node.identity());
            let serve = || Command::Serve { advert: stored.advert.clone(), psk: stored.psk.clone() };
            let outcome = match (stored.certificate, stored.key.is_some()) {
                (Some(cert), _) => {
                    let restore = Command::Restore { advert: stored.advert.clone(), cert, psk: stored.psk.clone() };
                    match self.command(restore, stored.psk.clone(), COMMAND_WAIT).await {
                        // An approver whose certificate expired while it was
                        // down certifies itself again.
                        Err(DomainError::Refused(_)) if approver => {
                            self.command(serve(), stored.psk.clone(), COMMAND_WAIT).await
                        }
                        other => other,
                    }
                }
                (None, true) => self.command(serve(), stored.psk.clone(), COMMAND_WAIT).await,
                (None, false) => continue,
            };
            match outcome {
                Ok(_) => tracing::info!(%domain, "back in the domain"),
                Err(err) => tracing::warn!(%domain, %err, "not back in the domain"),
            }
            let _ = self.serve(domain, ECHO_PROTOCOL, echo()).await;
        }
        Ok(())
    }

    async fn command(&self, command: Command, psk: Option<Vec<u8>>, wait: Duration) -> Result<Outcome, DomainError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Command { command: Box::new(command), psk, reply })
            .await
            .map_err(|_| DomainError::Stopped)?;
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(Outcome::Failed(reason))) => Err(DomainError::Refused(reason)),
            Ok(Ok(Outcome::JoinRefused { reason, .. })) => Err(DomainError::Refused(reason)),
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(DomainError::Stopped),
            Err(_) => Err(DomainError::TimedOut(wait)),
        }
    }

    /// Creates a domain this node owns and approves for: a new domain key
    /// (kept on disk, mode 0600), its signed advert naming this node, and
    /// this node's own certificate.
    pub async fn create(
        &self,
        policy: PolicySpec,
        cert_ttl_s: u32,
        full_mesh: bool,
    ) -> Result<(DomainAdvert, MembershipCertificate), DomainError> {
        let keys = Ed25519Keys::generate()?;
        let domain = DomainIdentity::new(keys.public());
        let me = self.node.identity();
        let (join, psk) = match policy {
            PolicySpec::Open => (JoinPolicy::Open, None),
            PolicySpec::PreSharedKey(psk) => {
                if psk.is_empty() || psk.len() > MAX_PSK_BYTES {
                    return Err(DomainError::Refused(format!(
                        "a pre-shared key is 1 to {MAX_PSK_BYTES} bytes; this one is {}",
                        psk.len()
                    )));
                }
                // A random tag, not a hash of the key: a hash in a public
                // advert would let anyone guess a weak key offline.
                let mut key_hash = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key_hash)
                    .map_err(|_| DomainError::Key(crate::crypto::KeyError::Generate))?;
                (JoinPolicy::PreSharedKey { key_hash }, Some(psk))
            }
            PolicySpec::AllowList(nodes) => {
                (JoinPolicy::AllowList(netmachine_domain::BoundedVec::new("allow-list", nodes)?), None)
            }
            PolicySpec::OwnerApproves => (JoinPolicy::OwnerApproves, None),
        };
        let rules = MembershipRules::new(vec![me], cert_ttl_s, vec![], full_mesh)?;
        let now = self.node.now();
        // The version is the clock, so that an advert signed later is newer.
        let body = DomainAdvertBody::new(domain, vec![me], join, now.0, now).map(|b| b.with_rules(rules))?;
        let advert = Advert::from_parts(body.clone(), keys.sign(&DomainAdvert::signing_bytes_of(&body)));
        if let Some(files) = &self.files {
            files.save_key(&domain, &keys)?;
            files.save_advert(&advert)?;
        }
        let outcome = self.command(Command::Serve { advert, psk: psk.clone() }, psk, COMMAND_WAIT).await?;
        let Outcome::Joined { advert, cert } = outcome else {
            return Err(DomainError::Refused(format!("unexpected answer {outcome:?}")));
        };
        self.serve(domain, ECHO_PROTOCOL, echo()).await?;
        Ok((advert, cert))
    }

    /// Joins a domain through `via`, or an approver its advert names; the
    /// owner of a domain it left serves it again instead.
    pub async fn join(
        &self,
        advert: DomainAdvert,
        psk: Option<Vec<u8>>,
        via: Option<NodeIdentity>,
    ) -> Result<Outcome, DomainError> {
        let domain = advert.id;
        // An owner that left joins again by serving its domain itself: as
        // an approver holding the key it has no one else to ask.
        let owner = match &self.files {
            Some(files) => files.load_key(&domain)?.is_some() && advert.rules.is_approver(&self.node.identity()),
            None => false,
        };
        let command = if owner {
            Command::Serve { advert, psk: psk.clone() }
        } else {
            Command::Join { advert, psk: psk.clone(), via }
        };
        let outcome = self.command(command, psk, JOIN_WAIT).await?;
        if matches!(outcome, Outcome::Joined { .. }) {
            self.serve(domain, ECHO_PROTOCOL, echo()).await?;
        }
        Ok(outcome)
    }

    pub async fn leave(&self, domain: DomainIdentity) -> Result<(), DomainError> {
        self.command(Command::Leave(domain), None, COMMAND_WAIT).await.map(|_| ())
    }

    /// The owner's answer to a join that waits for its approval.
    pub async fn approve(&self, domain: DomainIdentity, node: NodeIdentity, accept: bool) -> Result<(), DomainError> {
        self.command(Command::Approve { domain, node, accept }, None, COMMAND_WAIT).await.map(|_| ())
    }

    /// Signs a newer advert that revokes `member` and spreads it: the
    /// member's certificate no longer counts anywhere the advert reaches.
    pub async fn revoke(&self, domain: DomainIdentity, member: NodeIdentity) -> Result<DomainAdvert, DomainError> {
        let keys = match &self.files {
            Some(files) => files.load_key(&domain)?,
            None => None,
        }
        .ok_or(DomainError::NotOwner(domain))?;
        let held = self.summary(&domain).ok_or(DomainError::NotMember(domain))?.advert;
        let mut body = held.body.clone();
        let mut revoked = body.rules.revoked.clone().into_inner();
        if !revoked.contains(&member) {
            revoked.push(member);
        }
        body.rules = MembershipRules::new(
            body.rules.approvers.into_inner(),
            body.rules.cert_ttl_s,
            revoked,
            body.rules.full_mesh,
        )?;
        body.version = self.node.now().0.max(held.version + 1);
        body.created = self.node.now();
        let advert = Advert::from_parts(body.clone(), keys.sign(&DomainAdvert::signing_bytes_of(&body)));
        self.command(Command::Advert(advert.clone()), None, COMMAND_WAIT).await?;
        Ok(advert)
    }

    /// Answers outsiders' requests for `protocol` in `domain` with
    /// `handler`.
    pub async fn serve(&self, domain: DomainIdentity, protocol: &str, handler: Handler) -> Result<(), DomainError> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Serve { domain, protocol: protocol.to_string(), handler, reply };
        self.requests.send(request).await.map_err(|_| DomainError::Stopped)?;
        match tokio::time::timeout(COMMAND_WAIT, answer).await {
            Ok(Ok(Outcome::Failed(reason))) => Err(DomainError::Refused(reason)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(DomainError::Stopped),
            Err(_) => Err(DomainError::TimedOut(COMMAND_WAIT)),
        }
    }

    /// Sends an outsider's request to a member `advert` names, and returns
    /// its answer.
    pub async fn request(&self, advert: DomainAdvert, protocol: &str, body: Vec<u8>) -> Result<Vec<u8>, DomainError> {
        let command = Command::Request { advert, protocol: protocol.to_string(), body };
        match self.command(command, None, COMMAND_WAIT).await? {
            Outcome::Answered(body) => Ok(body),
            Outcome::ExternalFailed(err) => Err(DomainError::Refused(err.to_string())),
            other => Err(DomainError::Refused(format!("unexpected answer {other:?}"))),
        }
    }

    /// Every domain this node is in, with its overlay's views.
    pub fn list(&self) -> Vec<DomainSummary> {
        let owned = |domain: &DomainIdentity| self.files.as_ref().is_some_and(|f| f.key_path(domain).exists());
        let me = self.node.identity();
        self.node.inspect_engines(|engines| {
            let Some(engine) = engines.engine::<DomainEngine>() else { return Vec::new() };
            let topology = engines.engine::<Topology>();
            engine
                .memberships()
                .map(|m| {
                    let overlay = topology.and_then(|t| t.overlay(&m.advert.id));
                    DomainSummary {
                        advert: m.advert.clone(),
                        certificate: m.cert.clone(),
                        approver: m.advert.rules.is_approver(&me),
                        owner: owned(&m.advert.id),
                        active: overlay.map(|o| o.active().collect()).unwrap_or_default(),
                        passive: overlay.map(|o| o.passive().collect()).unwrap_or_default(),
                    }
                })
                .collect()
        })
    }

    pub fn summary(&self, domain: &DomainIdentity) -> Option<DomainSummary> {
        self.list().into_iter().find(|s| s.advert.id == *domain)
    }
}

fn echo() -> Handler {
    Arc::new(|request: &IncomingRequest| request.body.clone())
}

/// The `domains` engine: sends commands, hands each answer to its asker,
/// keeps every membership change on disk, and answers outsiders.
async fn run(mut engine: EngineHandle, mut requests: mpsc::Receiver<Request>, files: Option<DomainFiles>) {
    let own = DestinationIdentity::Node(engine.identity().node);
    let mut pending: HashMap<MessageId, oneshot::Sender<Outcome>> = HashMap::new();
    let mut handlers: HashMap<(DomainIdentity, String), Handler> = HashMap::new();
    let mut psks: HashMap<DomainIdentity, Vec<u8>> = HashMap::new();
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some(request) = request else { return };
                let (command, reply) = match request {
                    Request::Command { command, psk, reply } => {
                        if let (Some(psk), Some(domain)) = (psk, domain_of(&command)) {
                            psks.insert(domain, psk);
                        }
                        (*command, reply)
                    }
                    Request::Serve { domain, protocol, handler, reply } => {
                        handlers.insert((domain, protocol.clone()), handler);
                        (Command::ServeProtocol { domain, protocol }, reply)
                    }
                };
                match engine.send(own.clone(), protocol(), command.encode().as_bytes().clone()).await {
                    Ok(id) => { pending.insert(id, reply); }
                    Err(err) => { let _ = reply.send(Outcome::Failed(err.to_string())); }
                }
            }
            inbound = engine.recv() => {
                let Some(inbound) = inbound else { return };
                let Inbound::Message(message) = inbound else { continue };
                let Ok(outcome) = Outcome::decode(&message.body) else { continue };
                keep(files.as_ref(), &outcome, &psks);
                if let Outcome::Incoming { id, domain, requester, protocol: name, body } = &outcome {
                    let request = IncomingRequest { domain: *domain, requester: *requester, protocol: name.clone(), body: body.clone() };
                    let answer = handlers.get(&(*domain, name.clone())).map(|h| h(&request)).unwrap_or_default();
                    let command = Command::Answer { id: *id, body: answer };
                    let _ = engine.send(own.clone(), protocol(), command.encode().as_bytes().clone()).await;
                }
                if let Some(reply) = message.reply_to.and_then(|id| pending.remove(&id)) {
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

fn domain_of(command: &Command) -> Option<DomainIdentity> {
    match command {
        Command::Serve { advert, .. } | Command::Join { advert, .. } | Command::Restore { advert, .. } => {
            Some(advert.id)
        }
        _ => None,
    }
}

/// Keeps a membership change on disk.
fn keep(files: Option<&DomainFiles>, outcome: &Outcome, psks: &HashMap<DomainIdentity, Vec<u8>>) {
    let Some(files) = files else { return };
    let kept = match outcome {
        Outcome::Joined { advert, cert } => {
            files.save_membership(advert, cert, psks.get(&advert.id).map(Vec::as_slice))
        }
        Outcome::Left(domain) => files.remove_membership(domain),
        _ => return,
    };
    if let Err(err) = kept {
        tracing::error!(%err, "a domain membership could not be kept on disk; it will not survive a restart");
    }
}
