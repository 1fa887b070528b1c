//! The plaintext inside MLS application messages, validated after decryption. A peer
//! is as untrusted as the network: its content is parsed like any frame (P5xx).
use prost::Message;

use crate::ProtoError;
use crate::ids::MessageId;
use crate::pb::{self, content::Body};

/// Longest text message, in bytes (P510).
pub const MAX_TEXT_LEN: usize = 64 * 1024;

/// A validated message from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub message_id: MessageId,
    pub seq: u64,
    pub sent_at_ms: i64,
    pub text: String,
}

impl Content {
    /// Encodes for encryption.
    pub fn encode(&self) -> Vec<u8> {
        pb::Content {
            message_id: self.message_id.as_bytes().to_vec().into(),
            seq: self.seq,
            sent_at_ms: self.sent_at_ms,
            body: Some(Body::Text(pb::Text {
                text: self.text.clone(),
            })),
        }
        .encode_to_vec()
    }

    /// Decodes and validates decrypted bytes (P510, P511).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let raw = pb::Content::decode(bytes).map_err(|e| ProtoError::Malformed(e.to_string()))?;
        let message_id = MessageId::from_slice(&raw.message_id)?;
        if raw.seq == 0 {
            return Err(ProtoError::invalid("seq", "must start at 1"));
        }
        let text = match raw.body {
            Some(Body::Text(t)) => t.text,
            None => return Err(ProtoError::Empty),
        };
        if text.len() > MAX_TEXT_LEN {
            return Err(ProtoError::invalid(
                "text",
                format!("must be at most {MAX_TEXT_LEN} bytes"),
            ));
        }
        Ok(Content {
            message_id,
            seq: raw.seq,
            sent_at_ms: raw.sent_at_ms,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p510_content_round_trips_and_rejects_bad_fields() {
        let c = Content {
            message_id: MessageId::from_bytes([1; 16]),
            seq: 3,
            sent_at_ms: 1_700_000_000_000,
            text: "hi".into(),
        };
        assert_eq!(Content::decode(&c.encode()).unwrap(), c);
        let zero = Content {
            seq: 0,
            ..c.clone()
        };
        assert!(Content::decode(&zero.encode()).is_err());
        let big = Content {
            text: "x".repeat(MAX_TEXT_LEN + 1),
            ..c
        };
        assert!(Content::decode(&big.encode()).is_err());
        assert!(Content::decode(b"\xff\xff").is_err());
    }
}

/// A group name (P531): the rules of a username, written with a leading `#`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupName(String);

impl GroupName {
    /// Parses `#team` or `team`.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let bare = s.strip_prefix('#').unwrap_or(s);
        crate::ids::Username::parse(bare)
            .map(|_| GroupName(bare.to_owned()))
            .map_err(|e| ProtoError::invalid("group name", e.to_string().replace("username: ", "")))
    }

    /// Without the `#`.
    pub fn bare(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for GroupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The validated signed state of a group (P530).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub name: GroupName,
    pub admins: Vec<crate::ids::Username>,
    /// A channel: open to external commits by whoever the server admits (P550).
    pub joinable: bool,
}

impl GroupState {
    pub fn encode(&self) -> Vec<u8> {
        pb::GroupState {
            name: self.name.bare().to_owned(),
            admins: self.admins.iter().map(|a| a.to_string()).collect(),
            joinable: self.joinable,
        }
        .encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let raw =
            pb::GroupState::decode(bytes).map_err(|e| ProtoError::Malformed(e.to_string()))?;
        Ok(GroupState {
            name: GroupName::parse(&raw.name)?,
            admins: raw
                .admins
                .iter()
                .map(|a| crate::ids::Username::parse(a))
                .collect::<Result<_, _>>()?,
            joinable: raw.joinable,
        })
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|a| a.as_str() == user)
    }
}
