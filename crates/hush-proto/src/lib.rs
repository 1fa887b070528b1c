//! The hush wire protocol: the types generated from `proto/hush/v1/*.proto`, the frame
//! limits, typed identifiers, and the validation that turns untrusted frames into
//! trusted values.
//!
//! Modules:
//! - [`pb`]: generated protobuf types. Inbound ones are re-exported with an `In` suffix
//!   ([`ClientFrameIn`], [`ServerFrameIn`]) to mark them untrusted.
//! - [`frame`]: framing constants and encode/decode of whole frames (P1xx rules).
//! - [`ids`]: typed identifiers and user-chosen names, each validated on construction.
//! - [`auth`]: the OPAQUE cipher suite both sides must agree on.
//! - [`request`]: `ClientFrameIn` → [`request::Request`], what the server acts on.
//! - [`response`]: `ServerFrameIn` → [`response::Response`], what the client acts on.
//!
//! A new frame: add it to the `.proto`, give it a variant in `Request` or `Response`
//! with its validation, and number its rules in `docs/protocol.md`.
//!
//! This crate does no I/O and never panics on input.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod auth;
pub mod content;
pub mod fingerprint;
pub mod frame;
pub mod ids;
pub mod request;
pub mod response;

/// Types generated from the protobuf schema.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/hush.v1.rs"));
}

/// A frame from a client, not yet validated.
pub use pb::ClientFrame as ClientFrameIn;
pub use pb::ErrorCode;
/// A frame from a server, not yet validated.
pub use pb::ServerFrame as ServerFrameIn;

/// The protocol versions this build speaks, newest last.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];
/// The version this build prefers.
pub const PROTOCOL_VERSION: u32 = 1;

/// A byte count as people read it, for messages on both sides: `10 bytes`,
/// `1.5 KiB`, `3.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Why an inbound frame was refused. Each variant maps to one [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// P102: the bytes are not a protobuf message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// P101: the frame is longer than the limit in force.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// P103: a frame with no body, or one only a server may send.
    #[error("frame has no body")]
    Empty,
    /// A field failed its rule.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl ProtoError {
    /// The wire error code a peer is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::Malformed(_) | ProtoError::Empty => ErrorCode::MalformedFrame,
            ProtoError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtoError::Invalid { .. } => ErrorCode::InvalidArgument,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ProtoError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod human_tests {
    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(super::human_bytes(10), "10 bytes");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(super::human_bytes(1 << 30), "1.0 GiB");
    }
}
