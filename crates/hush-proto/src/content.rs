//! The plaintext inside MLS application messages, validated after decryption. A peer
//! is as untrusted as the network: its content is parsed like any frame (P5xx).
use prost::Message;

use crate::ProtoError;
use crate::ids::{FileId, MessageId};
use crate::pb::{self, content::Body};

/// Longest text message, in bytes (P510).
pub const MAX_TEXT_LEN: usize = 64 * 1024;

/// Longest offered file name, in bytes (P560).
pub const MAX_FILE_NAME_LEN: usize = 255;
/// Longest media type, in bytes (P560).
pub const MAX_MEDIA_TYPE_LEN: usize = 127;

/// A validated message from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub message_id: MessageId,
    pub seq: u64,
    pub sent_at_ms: i64,
    pub body: ContentBody,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentBody {
    Text(String),
    File(FileOffer),
}

/// P560: a file offered in a conversation, with what opens it.
#[derive(Clone, PartialEq, Eq)]
pub struct FileOffer {
    pub file_id: FileId,
    /// The file's own key (hush-crypto `file`); never logged.
    pub key: [u8; 32],
    pub sha256: [u8; 32],
    /// The sender's name for it: not a path to trust (P563).
    pub name: String,
    pub size: u64,
    pub media_type: String,
}

impl std::fmt::Debug for FileOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileOffer")
            .field("file_id", &self.file_id)
            .field("key", &"<redacted>")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("media_type", &self.media_type)
            .finish()
    }
}

impl Content {
    /// The text, for a text message.
    pub fn text(&self) -> Option<&str> {
        match &self.body {
            ContentBody::Text(t) => Some(t),
            ContentBody::File(_) => None,
        }
    }

    /// Encodes for encryption.
    pub fn encode(&self) -> Vec<u8> {
        let body = match &self.body {
            ContentBody::Text(text) => Body::Text(pb::Text { text: text.clone() }),
            ContentBody::File(f) => Body::File(pb::FileOffer {
                file_id: f.file_id.as_bytes().to_vec().into(),
                key: f.key.to_vec().into(),
                sha256: f.sha256.to_vec().into(),
                name: f.name.clone(),
                size: f.size,
                media_type: f.media_type.clone(),
            }),
        };
        pb::Content {
            message_id: self.message_id.as_bytes().to_vec().into(),
            seq: self.seq,
            sent_at_ms: self.sent_at_ms,
            body: Some(body),
        }
        .encode_to_vec()
    }

    /// Decodes and validates decrypted bytes (P510, P511, P560).
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let raw = pb::Content::decode(bytes).map_err(|e| ProtoError::Malformed(e.to_string()))?;
        let message_id = MessageId::from_slice(&raw.message_id)?;
        if raw.seq == 0 {
            return Err(ProtoError::invalid("seq", "must start at 1"));
        }
        let body = match raw.body {
            Some(Body::Text(t)) => {
                if t.text.len() > MAX_TEXT_LEN {
                    return Err(ProtoError::invalid(
                        "text",
                        format!("must be at most {MAX_TEXT_LEN} bytes"),
                    ));
                }
                ContentBody::Text(t.text)
            }
            Some(Body::File(f)) => ContentBody::File(file_offer(f)?),
            None => return Err(ProtoError::Empty),
        };
        Ok(Content {
            message_id,
            seq: raw.seq,
            sent_at_ms: raw.sent_at_ms,
            body,
        })
    }
}

fn file_offer(f: pb::FileOffer) -> Result<FileOffer, ProtoError> {
    let bytes32 = |field: &'static str, b: &[u8]| {
        <[u8; 32]>::try_from(b).map_err(|_| ProtoError::invalid(field, "must be 32 bytes"))
    };
    if f.name.is_empty() || f.name.len() > MAX_FILE_NAME_LEN {
        return Err(ProtoError::invalid(
            "name",
            format!("must be 1 to {MAX_FILE_NAME_LEN} bytes"),
        ));
    }
    if f.media_type.len() > MAX_MEDIA_TYPE_LEN
        || !f.media_type.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ProtoError::invalid(
            "media_type",
            format!("must be at most {MAX_MEDIA_TYPE_LEN} printable ASCII characters"),
        ));
    }
    Ok(FileOffer {
        file_id: FileId::from_slice(&f.file_id)?,
        key: bytes32("key", &f.key)?,
        sha256: bytes32("sha256", &f.sha256)?,
        name: f.name,
        size: f.size,
        media_type: f.media_type,
    })
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
            body: ContentBody::Text("hi".into()),
        };
        assert_eq!(Content::decode(&c.encode()).unwrap(), c);
        let zero = Content {
            seq: 0,
            ..c.clone()
        };
        assert!(Content::decode(&zero.encode()).is_err());
        let big = Content {
            body: ContentBody::Text("x".repeat(MAX_TEXT_LEN + 1)),
            ..c
        };
        assert!(Content::decode(&big.encode()).is_err());
        assert!(Content::decode(b"\xff\xff").is_err());
    }

    #[test]
    fn p560_file_offers_round_trip_and_keep_their_key_out_of_debug() {
        let offer = FileOffer {
            file_id: FileId::from_bytes([4; 16]),
            key: [9; 32],
            sha256: [8; 32],
            name: "report.pdf".into(),
            size: 1234,
            media_type: "application/pdf".into(),
        };
        let c = Content {
            message_id: MessageId::from_bytes([1; 16]),
            seq: 1,
            sent_at_ms: 1,
            body: ContentBody::File(offer.clone()),
        };
        assert_eq!(Content::decode(&c.encode()).unwrap(), c);
        assert!(!format!("{offer:?}").contains("9, 9"));
        for bad in [
            FileOffer {
                name: String::new(),
                ..offer.clone()
            },
            FileOffer {
                name: "x".repeat(MAX_FILE_NAME_LEN + 1),
                ..offer.clone()
            },
            FileOffer {
                media_type: "text/plain\n".into(),
                ..offer.clone()
            },
        ] {
            let c = Content {
                body: ContentBody::File(bad),
                ..c.clone()
            };
            assert!(Content::decode(&c.encode()).is_err());
        }
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
    /// An admin deleted it (P555); the removals that follow are its end.
    pub deleted: bool,
}

impl GroupState {
    pub fn encode(&self) -> Vec<u8> {
        pb::GroupState {
            name: self.name.bare().to_owned(),
            admins: self.admins.iter().map(|a| a.to_string()).collect(),
            joinable: self.joinable,
            deleted: self.deleted,
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
            deleted: raw.deleted,
        })
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|a| a.as_str() == user)
    }
}
