//! Control API responses as a person reads them, or as JSON lines.

use netmachine_adapters::control::{decode_body, ControlResponse, MessageInfo};

pub fn print(response: &ControlResponse, json: bool) {
    if json {
        match serde_json::to_string(response) {
            Ok(line) => println!("{line}"),
            Err(err) => eprintln!("netmachine: cannot print the response as JSON: {err}"),
        }
        return;
    }
    match response {
        ControlResponse::Status(s) => {
            println!("node        {}", s.node);
            if let Some(name) = &s.name {
                println!("name        {name}");
            }
            println!("addresses   {}", s.addresses.join(" "));
            println!("peers       {} connected", s.peers_connected);
            println!(
                "connections {} established, {} handshaking, {} dialling",
                s.connections_established, s.connections_handshaking, s.connections_dialling
            );
            println!(
                "waiting     {} queued for peers, {} in windows, {} in mailboxes",
                s.queued_messages, s.window_messages, s.mailbox_depth
            );
            println!("engines     {}", s.engines);
            println!(
                "messages    {} delivered locally, {} sent to peers, {} received from peers, {} refused, {} undeliverable",
                s.local_delivered, s.sent_remote, s.inbound_delivered, s.inbound_rejected, s.undeliverable
            );
            println!(
                "frames      {} sent, {} received, {} repeats dropped, {} protocol violations",
                s.frames_sent, s.frames_received, s.duplicates_dropped, s.violations
            );
            println!("drops       {} (by reason at /metrics)", s.drops);
            if let Some(metrics) = &s.metrics {
                println!("metrics     {metrics}");
            }
            println!("topics      {}", s.topics.len());
            for t in &s.topics {
                println!("  {}  {} local, {} remote subscribers", t.topic, t.local_subscribers, t.remote_subscribers);
            }
            println!("advert      {}", s.advert);
        }
        ControlResponse::Peers { peers } => {
            if peers.is_empty() {
                println!("no peers");
            }
            for p in peers {
                let state = if p.connected { "connected" } else { "not connected" };
                println!(
                    "{}  {:<13} {:<7} {:<22} {}  queued {} in flight {} failures {}",
                    p.node,
                    state,
                    p.protocol.as_deref().unwrap_or("-"),
                    p.remote.as_deref().unwrap_or("-"),
                    if p.permanent { "permanent" } else { "ephemeral" },
                    p.queued,
                    p.inflight,
                    p.failures
                );
            }
        }
        ControlResponse::Sent { id } => println!("queued message {id}"),
        ControlResponse::Delivered { id, dst, by } => {
            println!("delivered message {id} to {dst} (acknowledged by {by})")
        }
        // The command reports these itself, once, on standard error, and
        // exits with status 1.
        ControlResponse::Pending { .. } => {}
        ControlResponse::TopicCreated { topic } => println!("{topic}"),
        ControlResponse::Subscribed { topic } => eprintln!("subscribed to {topic}; Ctrl-C stops"),
        ControlResponse::Listening { engine } => eprintln!("listening on engine {engine}; Ctrl-C stops"),
        ControlResponse::Message(m) => println!("{}", message_line(m)),
        ControlResponse::Undeliverable { .. } => {}
        ControlResponse::PeerAdded { node } => println!("added permanent peer {node}"),
        ControlResponse::PeerRemoved { node } => println!("{node} is no longer a permanent peer; disconnected"),
        ControlResponse::TrustSet { node, trust: 0 } => println!("banned {node}"),
        ControlResponse::TrustSet { node, trust } => println!("trust of {node} set to {trust}"),
        ControlResponse::Unsubscribed { topic, streams } => {
            println!("unsubscribed from {topic} ({streams} streams ended)")
        }
        ControlResponse::DomainCreated { domain, advert } => {
            eprintln!("created domain {domain}; others join it with this advert:");
            println!("{advert}");
        }
        ControlResponse::DomainAdvertText { advert, .. } => println!("{advert}"),
        ControlResponse::DomainJoined { domain, approver, expires_ms } => {
            println!("joined {domain} (certificate from {approver}, expires at {expires_ms} ms)")
        }
        ControlResponse::DomainPending { domain } => {
            println!("the join of {domain} waits for the owner's approval (`netmachine domain approve` on the owner)")
        }
        ControlResponse::DomainLeft { domain } => println!("left {domain}"),
        ControlResponse::DomainApproved { domain, node, accept: true } => println!("admitted {node} to {domain}"),
        ControlResponse::DomainApproved { domain, node, accept: false } => println!("refused {node} in {domain}"),
        ControlResponse::DomainRevoked { domain, node, .. } => {
            println!("revoked {node} in {domain}; the newer advert spreads over the domain")
        }
        ControlResponse::Domains { domains } => {
            if domains.is_empty() {
                println!("in no domain");
            }
            for d in domains {
                let role = if d.owner {
                    "owner"
                } else if d.approver {
                    "approver"
                } else {
                    "member"
                };
                println!(
                    "{}  {:<8} {:<10} active {} passive {}  certificate expires at {} ms",
                    d.domain,
                    role,
                    d.policy,
                    d.active.len(),
                    d.passive.len(),
                    d.expires_ms
                );
            }
        }
        ControlResponse::DomainView(d) => {
            println!("domain  {}", d.domain);
            println!("active  {}", d.active.len());
            for n in &d.active {
                println!("  {n}");
            }
            println!("passive {}", d.passive.len());
            for n in &d.passive {
                println!("  {n}");
            }
        }
        ControlResponse::DomainAnswer { body } => match decode_body(body).map(String::from_utf8) {
            Ok(Ok(text)) => println!("{text}"),
            _ => println!("base64:{body}"),
        },
        // The command reports the error itself, once, on standard error.
        ControlResponse::Error { .. } => {}
    }
}

fn message_line(m: &MessageInfo) -> String {
    let body = match decode_body(&m.body) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) if !text.chars().any(char::is_control) => text,
            _ => format!("base64:{}", m.body),
        },
        Err(_) => m.body.clone(),
    };
    let signed = if m.signed { " (signed)" } else { "" };
    format!("{} [{}] #{}{}: {}", m.src, m.protocol, m.id, signed, body)
}
