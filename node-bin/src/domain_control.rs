//! The control API's domain requests (`docs/domains.md`), served with the
//! node's [`Domains`].

use netmachine_adapters::control::{decode_body, encode_body, ControlRequest, ControlResponse, DomainInfo};
use netmachine_adapters::domains::{DomainSummary, Domains, PolicySpec};
use netmachine_adapters::text_forms::{domain_advert_from_text, domain_advert_to_text};
use netmachine_domain::membership::DEFAULT_CERT_TTL_S;
use netmachine_domain::{DomainAdvert, DomainIdentity, JoinPolicy, NodeIdentity};
use netmachine_engines::domain::Outcome;

fn error(message: impl Into<String>) -> ControlResponse {
    ControlResponse::Error { message: message.into() }
}

fn parse_domain(text: &str) -> Result<DomainIdentity, String> {
    text.trim().parse::<DomainIdentity>().map_err(|e| format!("{e}; a domain identity starts with `domain1`"))
}

fn parse_node(text: &str) -> Result<NodeIdentity, String> {
    text.trim().parse::<NodeIdentity>().map_err(|e| e.to_string())
}

fn policy_name(join: &JoinPolicy) -> &'static str {
    match join {
        JoinPolicy::Open => "open",
        JoinPolicy::PreSharedKey { .. } => "psk",
        JoinPolicy::AllowList(_) => "allow-list",
        JoinPolicy::OwnerApproves => "owner",
    }
}

fn info(summary: &DomainSummary) -> DomainInfo {
    DomainInfo {
        domain: summary.advert.id.to_string(),
        policy: policy_name(&summary.advert.join).into(),
        owner: summary.owner,
        approver: summary.approver,
        expires_ms: summary.certificate.expires.0,
        active: summary.active.iter().map(ToString::to_string).collect(),
        passive: summary.passive.iter().map(ToString::to_string).collect(),
    }
}

fn advert_text(advert: &DomainAdvert) -> Result<String, String> {
    domain_advert_to_text(advert).map_err(|e| e.to_string())
}

/// Advert text, or the identity of a domain this node holds.
fn advert_of(domains: &Domains, text: &str) -> Result<DomainAdvert, String> {
    if text.trim().starts_with(netmachine_adapters::text_forms::DOMAIN_ADVERT_PREFIX) {
        return domain_advert_from_text(text).map_err(|e| e.to_string());
    }
    let domain = parse_domain(text)?;
    domains
        .summary(&domain)
        .map(|s| s.advert)
        .ok_or_else(|| format!("this node is not in domain {domain}; give the domain advert text instead"))
}

fn psk_of(text: Option<&str>) -> Result<Option<Vec<u8>>, String> {
    text.map(decode_body).transpose()
}

pub async fn handle(domains: &Domains, request: ControlRequest) -> ControlResponse {
    match serve(domains, request).await {
        Ok(response) => response,
        Err(message) => error(message),
    }
}

async fn serve(domains: &Domains, request: ControlRequest) -> Result<ControlResponse, String> {
    let failed = |e: netmachine_adapters::domains::DomainError| e.to_string();
    Ok(match request {
        ControlRequest::DomainCreate { policy, psk, allow, cert_ttl_s, full_mesh } => {
            let policy = match policy.as_str() {
                "open" => PolicySpec::Open,
                "psk" => {
                    PolicySpec::PreSharedKey(psk_of(psk.as_deref())?.ok_or("a psk domain needs the key: --psk-file")?)
                }
                "allow-list" => {
                    PolicySpec::AllowList(allow.iter().map(|n| parse_node(n)).collect::<Result<Vec<_>, _>>()?)
                }
                "owner" => PolicySpec::OwnerApproves,
                other => return Err(format!("unknown join policy {other:?}: open, psk, allow-list or owner")),
            };
            let ttl = cert_ttl_s.unwrap_or(DEFAULT_CERT_TTL_S);
            let (advert, _) = domains.create(policy, ttl, full_mesh).await.map_err(failed)?;
            ControlResponse::DomainCreated { domain: advert.id.to_string(), advert: advert_text(&advert)? }
        }
        ControlRequest::DomainAdvert { domain } => {
            let advert = advert_of(domains, &domain)?;
            ControlResponse::DomainAdvertText { domain: advert.id.to_string(), advert: advert_text(&advert)? }
        }
        ControlRequest::DomainJoin { advert, psk, via } => {
            let advert = domain_advert_from_text(&advert).map_err(|e| e.to_string())?;
            let via = via.as_deref().map(parse_node).transpose()?;
            match domains.join(advert, psk_of(psk.as_deref())?, via).await.map_err(failed)? {
                Outcome::Joined { advert, cert } => ControlResponse::DomainJoined {
                    domain: advert.id.to_string(),
                    approver: cert.approver.to_string(),
                    expires_ms: cert.expires.0,
                },
                Outcome::Pending(domain) => ControlResponse::DomainPending { domain: domain.to_string() },
                other => return Err(format!("unexpected answer {other:?}")),
            }
        }
        ControlRequest::DomainLeave { domain } => {
            let domain = parse_domain(&domain)?;
            domains.leave(domain).await.map_err(failed)?;
            ControlResponse::DomainLeft { domain: domain.to_string() }
        }
        ControlRequest::DomainApprove { domain, node, accept } => {
            let (domain, node) = (parse_domain(&domain)?, parse_node(&node)?);
            domains.approve(domain, node, accept).await.map_err(failed)?;
            ControlResponse::DomainApproved { domain: domain.to_string(), node: node.to_string(), accept }
        }
        ControlRequest::DomainRevoke { domain, node } => {
            let (domain, node) = (parse_domain(&domain)?, parse_node(&node)?);
            let advert = domains.revoke(domain, node).await.map_err(failed)?;
            ControlResponse::DomainRevoked {
                domain: domain.to_string(),
                node: node.to_string(),
                advert: advert_text(&advert)?,
            }
        }
        ControlRequest::DomainList => ControlResponse::Domains { domains: domains.list().iter().map(info).collect() },
        ControlRequest::DomainView { domain } => {
            let domain = parse_domain(&domain)?;
            let summary = domains.summary(&domain).ok_or_else(|| format!("this node is not in domain {domain}"))?;
            ControlResponse::DomainView(info(&summary))
        }
        ControlRequest::DomainRequest { domain, protocol, body } => {
            let advert = advert_of(domains, &domain)?;
            let answer = domains.request(advert, &protocol, decode_body(&body)?).await.map_err(failed)?;
            ControlResponse::DomainAnswer { body: encode_body(&answer) }
        }
        other => return Err(format!("not a domain request: {other:?}")),
    })
}
