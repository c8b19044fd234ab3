//! Embedding a netmachine node in a Rust service.
//!
//! cargo run -p netmachine-adapters --example embed
//!
//! Builds a node, hosts an echo engine as a task, sends it a request from an
//! application engine, and publishes on a topic to two subscribers.

use netmachine_adapters::runtime::{Inbound, Node};
use netmachine_domain::{DestinationIdentity, EngineIdentity, EngineName, ProtocolId};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without a data directory, identity records live in memory only.
    let node = Node::builder().start().await?;
    println!("node {}", node.identity());
    let protocol = ProtocolId::new("example/echo", 1)?;

    // An engine hosted as a task: it answers every message with the same body.
    let echo = node.spawn_engine("echo", |mut me| async move {
        while let Some(Inbound::Message(request)) = me.recv().await {
            let body = request.body.as_bytes().clone();
            if me.reply(&request, body).await.is_err() {
                break;
            }
        }
    })?;

    // An application engine driven from here.
    let mut app = node.register_engine("app")?;
    let echo_address = DestinationIdentity::Engine(EngineIdentity::new(node.identity(), EngineName::new("echo")?));
    let id = app.send(echo_address, protocol.clone(), &b"hello, netmachine"[..]).await?;
    if let Some(Inbound::Message(answer)) = app.recv().await {
        assert_eq!(answer.reply_to, Some(id));
        println!("echo answered: {}", String::from_utf8_lossy(answer.body.as_bytes()));
    }

    // A topic with two subscribers.
    let topic = app.create_topic(&["news"]).await?;
    let mut reader_a = node.register_engine("reader-a")?;
    let mut reader_b = node.register_engine("reader-b")?;
    reader_a.subscribe(&topic)?;
    reader_b.subscribe(&topic)?;
    app.publish(topic, protocol, &b"first event"[..]).await?;
    for reader in [&mut reader_a, &mut reader_b] {
        if let Some(Inbound::Message(event)) = reader.recv().await {
            println!("{} got: {}", reader.identity().name, String::from_utf8_lossy(event.body.as_bytes()));
        }
    }
    println!("topic {topic}: {:?}", node.stats());

    echo.abort();
    node.shutdown().await;
    Ok(())
}
