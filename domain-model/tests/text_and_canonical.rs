//! Text forms round-trip and say what is wrong; canonical signing bytes are
//! deterministic and change with every field.

use netmachine_domain::strategies;
use netmachine_domain::*;
use proptest::prelude::*;

proptest! {
    #[test]
    fn node_identities_round_trip_through_text(id in strategies::node_identity()) {
        let text = id.to_string();
        prop_assert!(text.starts_with("node1"));
        prop_assert!(text.len() <= 63, "fits a DNS label: {}", text.len());
        prop_assert_eq!(text.parse::<NodeIdentity>().expect("parses"), id);
    }

    #[test]
    fn topic_and_domain_identities_round_trip(t in strategies::topic_identity(), d in strategies::domain_identity()) {
        prop_assert_eq!(t.to_string().parse::<TopicIdentity>().expect("parses"), t);
        prop_assert_eq!(d.to_string().parse::<DomainIdentity>().expect("parses"), d);
        prop_assert_eq!(ExternalIdentity::from(t).to_string().parse::<ExternalIdentity>().expect("parses"), ExternalIdentity::from(t));
    }

    #[test]
    fn engine_identities_round_trip(e in strategies::engine_identity()) {
        prop_assert_eq!(e.to_string().parse::<EngineIdentity>().expect("parses"), e);
    }

    #[test]
    fn transport_addresses_round_trip(a in strategies::transport_address()) {
        prop_assert_eq!(a.to_string().parse::<TransportAddress>().expect("parses"), a);
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(s in "\\PC{0,80}") {
        let _ = s.parse::<NodeIdentity>();
        let _ = s.parse::<EngineIdentity>();
        let _ = s.parse::<TransportAddress>();
        let _ = s.parse::<ExternalIdentity>();
    }

    #[test]
    fn signing_bytes_are_deterministic(m in strategies::engine_message()) {
        prop_assert_eq!(m.signing_bytes(), m.clone().signing_bytes());
    }

    /// Every field but the signature is covered.
    #[test]
    fn every_engine_message_field_changes_the_signing_bytes(m in strategies::engine_message(), sig in strategies::signature()) {
        let base = m.signing_bytes();
        let mut changed = Vec::new();
        let mut v = m.clone(); v.id = MessageId(m.id.0.wrapping_add(1)); changed.push(v);
        let mut v = m.clone(); v.reply_to = Some(MessageId(m.reply_to.map_or(0, |r| r.0.wrapping_add(1)))); changed.push(v);
        let mut v = m.clone(); v.expiry = Some(Timestamp(m.expiry.map_or(0, |e| e.0.wrapping_add(1)))); changed.push(v);
        let mut v = m.clone(); v.scope = if m.scope == RoutingScope::Any { RoutingScope::Local } else { RoutingScope::Any }; changed.push(v);
        let mut v = m.clone(); v.prefs = if m.prefs.is_some() { None } else { Some(TransportPrefs::default()) }; changed.push(v);
        let mut v = m.clone(); v.protocol.version = m.protocol.version.wrapping_add(1); changed.push(v);
        let mut v = m.clone(); let mut b = m.body.as_bytes().to_vec(); b.push(1); v.body = Body::new(b).expect("small"); changed.push(v);
        let mut v = m.clone(); v.src.name = EngineName::new(if m.src.name.as_str() == "a" { "b" } else { "a" }).expect("valid"); changed.push(v);
        let mut v = m.clone(); v.dst = DestinationIdentity::Node(NodeIdentity::ed25519([0xAB; 32])); if v.dst != m.dst { changed.push(v); }
        for v in changed {
            prop_assert_ne!(v.signing_bytes(), base.clone());
        }
        let mut signed = m.clone();
        signed.sig = Some(sig);
        prop_assert_eq!(signed.signing_bytes(), base, "the signature itself is not covered");
    }

    #[test]
    fn every_node_advert_field_changes_the_signing_bytes(body in strategies::node_advert_body()) {
        let base = NodeAdvert::signing_bytes_of(&body);
        let mut v = body.clone(); v.version = body.version.wrapping_add(1);
        prop_assert_ne!(NodeAdvert::signing_bytes_of(&v), base.clone());
        let mut v = body.clone(); v.created = Timestamp(body.created.0 + 1);
        prop_assert_ne!(NodeAdvert::signing_bytes_of(&v), base.clone());
        let mut v = body.clone(); v.name = if body.name.is_some() { None } else { Some(BoundedText::new("n", "x").expect("ok")) };
        prop_assert_ne!(NodeAdvert::signing_bytes_of(&v), base.clone());
        let mut addrs = body.addrs.to_vec();
        addrs.truncate(limits::MAX_ADVERT_ADDRESSES - 1);
        addrs.push(WeightedAddress { address: "quic://10.0.0.1:1".parse().expect("valid"), weight: 3 });
        let mut v = body.clone(); v.addrs = BoundedVec::new("addrs", addrs).expect("fits");
        prop_assert_ne!(NodeAdvert::signing_bytes_of(&v), base.clone());
        let mut v = body.clone(); v.id = NodeIdentity::ed25519([0x5A; 32]);
        if v.id != body.id { prop_assert_ne!(NodeAdvert::signing_bytes_of(&v), base); }
    }

    /// Different signed types never share signing bytes, even with equal
    /// content: each starts with its own tag.
    #[test]
    fn signed_types_are_separated(t in strategies::topic_advert_body(), d in strategies::domain_advert_body()) {
        prop_assert!(TopicAdvert::signing_bytes_of(&t).starts_with(&[0, 0, 0, 24]));
        prop_assert_ne!(&TopicAdvert::signing_bytes_of(&t)[..28], &DomainAdvert::signing_bytes_of(&d)[..28]);
    }
}

#[test]
fn text_errors_say_what_is_wrong() {
    let err = "nod1abc".parse::<NodeIdentity>().expect_err("prefix");
    assert!(err.to_string().contains("node1"), "{err}");
    let err = "node1ABC".parse::<NodeIdentity>().expect_err("case");
    assert!(err.to_string().contains("lowercase"), "{err}");
    let err = "node1aebq".parse::<NodeIdentity>().expect_err("short");
    assert!(err.to_string().contains("32 bytes") || err.to_string().contains("base32"), "{err}");
    let err = "udp://1.2.3.4:5".parse::<TransportAddress>().expect_err("scheme");
    assert!(err.to_string().contains("unknown scheme"), "{err}");
    let err = "quic://example.com:5".parse::<TransportAddress>().expect_err("host");
    assert!(err.to_string().contains("host names"), "{err}");
    let err = "quic://::1:4100".parse::<TransportAddress>().expect_err("brackets");
    assert!(err.to_string().contains("brackets"), "{err}");
    let err = "quic://127.0.0.1:0".parse::<TransportAddress>().expect_err("port 0");
    assert!(err.to_string().contains("port 0"), "{err}");
    let err = "Bad@node1aa".parse::<EngineIdentity>().expect_err("engine");
    assert!(!err.to_string().is_empty());
    assert_eq!("tls-tcp://[::1]:4100".parse::<TransportAddress>().expect("valid").to_string(), "tls-tcp://[::1]:4100");
}

#[test]
fn limits_are_enforced_at_construction() {
    let id = NodeIdentity::ed25519([1; 32]);
    let addr = WeightedAddress { address: "quic://127.0.0.1:1".parse().expect("valid"), weight: 1 };
    let too_many = vec![addr; limits::MAX_ADVERT_ADDRESSES + 1];
    assert!(matches!(NodeAdvertBody::new(id, too_many, None, 1, Timestamp(0)), Err(ValidationError::TooLong { .. })));
    let long_name = "x".repeat(limits::MAX_NODE_NAME_BYTES + 1);
    assert!(NodeAdvertBody::new(id, vec![], Some(&long_name), 1, Timestamp(0)).is_err());
    assert!(NodeAdvertBody::new(id, vec![], Some("bad\u{7}name"), 1, Timestamp(0)).is_err());
    let topic = TopicIdentity::ed25519([2; 32]);
    assert!(matches!(
        TopicAdvertBody::new(topic, vec![], vec![], vec![], 1, Timestamp(0)),
        Err(ValidationError::Empty { .. })
    ));
    assert!(EngineName::new("").is_err());
    assert!(EngineName::new(&"a".repeat(65)).is_err());
    assert!(EngineName::new("UPPER").is_err());
    assert!(ProtocolId::new("", 1).is_err());
    assert!(Body::new(vec![0u8; limits::MAX_BODY_BYTES + 1]).is_err());
}

#[test]
fn bind_addresses_may_ask_for_any_port_but_adverts_may_not() {
    let any = TransportAddress::parse_bind("quic://127.0.0.1:0").expect("bind");
    assert_eq!(any.socket.port(), 0);
    assert_eq!(TransportAddress::parse_bind("tls-tcp://[::1]:0").expect("bind").socket.port(), 0);
    assert_eq!(TransportAddress::parse_bind("quic://127.0.0.1:4100").expect("bind").socket.port(), 4100);
    assert!("quic://127.0.0.1:0".parse::<TransportAddress>().is_err());
    assert!(TransportAddress::parse_bind("udp://1.2.3.4:0").is_err());
}
