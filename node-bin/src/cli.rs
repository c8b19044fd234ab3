//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// netmachine: a node of the Anoma Networking Machine.
#[derive(Debug, Parser)]
#[command(name = "netmachine", version)]
pub struct Cli {
    /// The node's TOML configuration (else $NETMACHINE_CONFIG); without
    /// either, built-in defaults apply.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Where the key and the identity records live. Order: this flag, then
    /// the config's data_dir, then $NETMACHINE_HOME, then
    /// $XDG_DATA_HOME/netmachine, then ~/.local/share/netmachine.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// The control socket: the one `run` serves, or the one a command talks
    /// to. Order: this flag, then the config's control_socket, then (for
    /// commands only, never for `run`) $NETMACHINE_CONTROL, then
    /// <data dir>/control.sock.
    #[arg(long, global = true)]
    pub control: Option<PathBuf>,
    /// Print JSON lines (the control API's responses) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DevnetProtocol {
    Quic,
    TlsTcp,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Makes the node key (mode 0600) in the data directory.
    Keygen {
        /// Write the key here instead of <data-dir>/node.key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Replace an existing key. The node's old identity is lost.
        #[arg(long)]
        force: bool,
    },
    /// Prints this node's signed advert, the text another node's config
    /// takes (under `peers`) to know this one.
    Advert,
    /// Runs the node until Ctrl-C or SIGTERM. On first start it makes a key.
    Run,
    /// Runs N connected nodes on loopback with a demo workload and shows
    /// live what they do.
    Devnet {
        /// How many nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=64))]
        nodes: u16,
        /// How many overlapping domains they form (node k owns domain k;
        /// each node joins two).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=64))]
        domains: u16,
        /// The transport between them.
        #[arg(long, value_enum, default_value = "quic")]
        protocol: DevnetProtocol,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Where the nodes' control sockets go (default: a new temporary
        /// directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Lists the node's peers and their connections.
    Peers,
    /// Shows what the node is doing.
    Status,
    /// Sends a message to an engine (`name@node1...`) or to a node's inbox
    /// (`node1...`), and waits to say whether it was delivered.
    Send {
        to: String,
        /// The body: text, or @path to send a file's bytes.
        body: String,
        /// Give up (and say so) if not delivered within this many ms.
        #[arg(long)]
        ttl_ms: Option<u64>,
        /// Sign the message so its receiver can prove who sent it.
        #[arg(long)]
        sign: bool,
        /// Return as soon as the message is queued, without waiting for the
        /// outcome.
        #[arg(long)]
        no_wait: bool,
    },
    /// Publishes on a topic this node may publish on.
    Publish {
        topic: String,
        /// The body: text, or @path to send a file's bytes.
        body: String,
    },
    /// Creates a topic published by this node and prints its identity.
    CreateTopic {
        /// Tags for the topic's advert.
        tags: Vec<String>,
    },
    /// Streams a topic's events until Ctrl-C.
    Subscribe { topic: String },
    /// Streams the messages sent to this node's `inbox` engine until Ctrl-C.
    Inbox,
    /// Adds a permanent peer from its advert text.
    AddPeer { advert: String },
    /// Stops keeping a peer connected and closes its connection.
    RemovePeer { node: String },
    /// Sets a node's trust: 0 bans it, 128 is the default, 255 the most.
    Trust { node: String, level: u8 },
    /// Bans a node: closes its connection, gives up what waits for it, and
    /// refuses it from now on.
    Ban { node: String },
    /// Lifts a ban: the node's trust goes back to the default, 128.
    Unban { node: String },
    /// Ends every `subscribe` stream of a topic on the node.
    Unsubscribe { topic: String },
    /// Sovereign domains: create one, join, leave, approve, revoke, list,
    /// look at a domain's overlay, send an outsider's request.
    #[command(subcommand)]
    Domain(DomainCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JoinPolicyArg {
    /// Anyone may join.
    Open,
    /// Joiners prove they hold a pre-shared key (--psk-file).
    Psk,
    /// Only the nodes named with --allow.
    AllowList,
    /// The owner approves each join (`domain approve`).
    Owner,
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Makes a domain this node owns: its key (kept in the data directory,
    /// mode 0600) and its signed advert, printed for others to join with.
    Create {
        #[arg(long, value_enum, default_value = "open")]
        policy: JoinPolicyArg,
        /// The pre-shared key's file, for --policy psk.
        #[arg(long)]
        psk_file: Option<PathBuf>,
        /// A node allowed to join, for --policy allow-list (repeat it).
        #[arg(long)]
        allow: Vec<String>,
        /// How long a membership certificate lasts, in seconds.
        #[arg(long)]
        cert_ttl: Option<u32>,
        /// Every member connects to every other, whatever the size.
        #[arg(long)]
        full_mesh: bool,
    },
    /// Prints the advert text of a domain this node is in.
    Advert { domain: String },
    /// Joins the domain of an advert text (or @file holding it).
    Join {
        advert: String,
        /// The pre-shared key's file, for a domain that asks for one.
        #[arg(long)]
        psk_file: Option<PathBuf>,
        /// Ask this approver first.
        #[arg(long)]
        via: Option<String>,
    },
    /// Leaves a domain: its neighbours are told, its certificate forgotten.
    Leave { domain: String },
    /// Admits a node whose join waits for the owner's approval.
    Approve {
        domain: String,
        node: String,
        /// Refuse it instead.
        #[arg(long)]
        deny: bool,
    },
    /// Signs a newer advert that removes a member (owner only).
    Revoke { domain: String, node: String },
    /// Lists the domains this node is in.
    List,
    /// Shows a domain's active and passive views.
    View { domain: String },
    /// Sends an outsider's request for a protocol to a member of a domain
    /// (advert text, or @file, or the identity of a domain this node is in).
    Request {
        domain: String,
        protocol: String,
        /// The body: text, or @path to send a file's bytes.
        body: String,
    },
}
