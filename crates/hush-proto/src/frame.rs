//! Framing: every frame is a 4-byte big-endian length and that many bytes of protobuf.
//!
//! Rules (docs/protocol.md): P101 a frame longer than the limit closes the connection;
//! P102 bytes that do not decode close it; both after an `Error` frame.
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

use crate::ProtoError;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Hard maximum size of one frame after authentication. A Welcome for a 1,000-member
/// MLS group is about 330 KB, so this leaves room for it and its ratchet tree.
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// What a mailbox entry costs in an answer beyond its payload (ids, kind, times: about
/// 80 bytes encoded), counted generously (P440).
pub const ENTRY_OVERHEAD: usize = 128;

/// Room a mailbox answer keeps for its frame header and request id.
pub const ANSWER_ROOM: usize = 4096;

/// Largest payload one mailbox entry may hold (a message, commit or Welcome) under the
/// default frame limit, so that any entry fits in a mailbox answer (P440). A server
/// with a smaller frame limit refuses larger ones itself.
pub const MAX_ENTRY_PAYLOAD: usize = MAX_FRAME_LEN - ANSWER_ROOM - ENTRY_OVERHEAD;

/// Maximum size of a frame before the connection has authenticated: OPAQUE messages
/// are a few hundred bytes, so an unauthenticated peer cannot make the server buffer
/// more than this.
pub const MAX_PRE_AUTH_FRAME_LEN: usize = 16 * 1024;

/// Encodes a message as one frame, length prefix included.
pub fn encode<M: Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(LENGTH_PREFIX + len);
    // A frame we build ourselves is bounded by what we put in it; u32 covers the limit.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    msg.encode_raw(&mut buf);
    buf.freeze()
}

/// Encodes a message body without the prefix (for codecs that add it themselves).
pub fn encode_body<M: Message>(msg: &M) -> Bytes {
    Bytes::from(msg.encode_to_vec())
}

/// Decodes one frame body (the bytes after the length prefix), enforcing `max`.
pub fn decode<M: Message + Default>(body: &[u8], max: usize) -> Result<M, ProtoError> {
    if body.len() > max {
        return Err(ProtoError::TooLarge {
            len: body.len(),
            max,
        });
    }
    M::decode(body).map_err(|e| ProtoError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    #[test]
    fn p101_rejects_oversized_body() {
        let body = vec![0u8; 100];
        let err = decode::<pb::ClientFrame>(&body, 10).unwrap_err();
        assert_eq!(err, ProtoError::TooLarge { len: 100, max: 10 });
    }

    #[test]
    fn p102_rejects_garbage() {
        // Field 1 as a length-delimited field with a length past the end.
        let err = decode::<pb::ClientFrame>(&[0x0a, 0xff, 0x01], MAX_FRAME_LEN).unwrap_err();
        assert!(matches!(err, ProtoError::Malformed(_)));
    }

    #[test]
    fn encode_prefixes_length() {
        let frame = pb::ClientFrame {
            request_id: 7,
            body: Some(pb::client_frame::Body::Ping(pb::Ping {
                payload: Bytes::from_static(b"hi"),
            })),
        };
        let bytes = encode(&frame);
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        assert_eq!(len, bytes.len() - LENGTH_PREFIX);
        let back: pb::ClientFrame = decode(&bytes[LENGTH_PREFIX..], MAX_FRAME_LEN).unwrap();
        assert_eq!(back, frame);
    }
}
