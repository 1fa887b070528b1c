//! Typed identifiers and user-chosen names. Each is valid by construction: the only way
//! to get one is through its parser, which enforces the rule numbered in
//! docs/protocol.md.
use std::fmt;

use crate::ProtoError;

/// A username (P301): 3 to 32 characters of lowercase ASCII letters, digits, `_`, `.`
/// and `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 32;

    /// Parses a username, explaining the rule it breaks.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let len = s.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(ProtoError::invalid(
                "username",
                format!(
                    "must be {} to {} characters long (got {len})",
                    Self::MIN_LEN,
                    Self::MAX_LEN
                ),
            ));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(*c)))
        {
            return Err(ProtoError::invalid(
                "username",
                format!(
                    "may contain only lowercase letters, digits, '_', '.' and '-' (found {bad:?})"
                ),
            ));
        }
        Ok(Username(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({})", self.0)
    }
}

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            /// Wraps 16 bytes chosen by the server's random source.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                $name(bytes)
            }

            /// Parses the wire form: exactly 16 bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtoError> {
                <[u8; 16]>::try_from(bytes)
                    .map($name)
                    .map_err(|_| ProtoError::invalid($field, format!("must be 16 bytes (got {})", bytes.len())))
            }

            /// Parses the text form: 32 lowercase hex digits.
            pub fn parse_hex(s: &str) -> Result<Self, ProtoError> {
                let bad = || ProtoError::invalid($field, "must be 32 hexadecimal digits");
                if s.len() != 32 {
                    return Err(bad());
                }
                let mut out = [0u8; 16];
                for (i, byte) in out.iter_mut().enumerate() {
                    let pair = s.get(2 * i..2 * i + 2).ok_or_else(bad)?;
                    *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
                }
                Ok($name(out))
            }

            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

random_id!(
    /// A user account, chosen at random by the server at registration.
    UserId,
    "user_id"
);
random_id!(
    /// One device (one client home) of a user; an MLS leaf carries it, never the
    /// username.
    DeviceId,
    "device_id"
);

random_id!(
    /// A conversation: one MLS group (a 1:1 chat is a two-user group), chosen at
    /// random by its creator.
    GroupId,
    "group_id"
);
random_id!(
    /// One message, chosen at random by its sender and carried inside the encrypted
    /// content.
    MessageId,
    "message_id"
);
random_id!(
    /// One shared file's sealed bytes on the server (P560), chosen at random by its
    /// uploader; the blob store's only name for it.
    FileId,
    "file_id"
);
random_id!(
    /// A client's idempotency key for one group creation or commit (P423, P433):
    /// a retry with the same key is answered with the first result, applied once.
    HandshakeKey,
    "client_key"
);

/// An account's Ed25519 public key as the wire carries it (P540): 32 bytes. Whether it
/// is a valid key, and whose, the client decides (hush-crypto).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKeyBytes([u8; 32]);

impl AccountKeyBytes {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        AccountKeyBytes(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtoError> {
        <[u8; 32]>::try_from(bytes)
            .map(AccountKeyBytes)
            .map_err(|_| {
                ProtoError::invalid(
                    "account_key",
                    format!("must be 32 bytes (got {})", bytes.len()),
                )
            })
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for AccountKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountKeyBytes(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A display name (P302): up to 64 characters, no control characters. Empty means none.
pub fn parse_display_name(s: &str) -> Result<Option<String>, ProtoError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    if s.chars().count() > 64 {
        return Err(ProtoError::invalid(
            "display_name",
            "must be at most 64 characters",
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(ProtoError::invalid(
            "display_name",
            "must not contain control characters",
        ));
    }
    Ok(Some(s.to_owned()))
}

/// An email address (P303): at most 254 characters, one `@` with text on both sides,
/// no spaces or control characters. Empty means none. The server never mails it; it
/// is contact information for the operator.
pub fn parse_email(s: &str) -> Result<Option<String>, ProtoError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let valid = s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(s.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if valid {
        Ok(Some(s.to_owned()))
    } else {
        Err(ProtoError::invalid(
            "email",
            "must look like name@example.org",
        ))
    }
}

/// A device's bearer token: 32 random bytes. The server keeps only its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken([u8; 32]);

impl SessionToken {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionToken(bytes)
    }

    /// P304: a token is exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtoError> {
        <[u8; 32]>::try_from(bytes)
            .map(SessionToken)
            .map_err(|_| ProtoError::invalid("session_token", "must be 32 bytes"))
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest the server stores and looks tokens up by.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(self.0).into()
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

impl Drop for SessionToken {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// An invite code (P305) as typed by a user: 1 to 128 printable ASCII characters.
/// Its content is checked against the server's store, which keeps only digests.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteCode(String);

impl InviteCode {
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let s = s.trim();
        if s.is_empty() || s.len() > 128 || !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ProtoError::invalid(
                "invite",
                "must be 1 to 128 printable ASCII characters",
            ));
        }
        Ok(InviteCode(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest the server stores invites by.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteCode(<redacted>)")
    }
}

/// A second factor typed at login or to turn two-factor off (P330): the current
/// 6-digit authenticator code, or one of the account's recovery codes.
#[derive(Clone, PartialEq, Eq)]
pub enum SecondFactor {
    /// Six ASCII digits (RFC 6238 with 6 digits).
    Code(TotpCode),
    /// A recovery code, normalised: lowercase, without separators.
    Recovery(RecoveryCode),
}

/// Six ASCII digits: an authenticator code (RFC 6238, 6 digits).
#[derive(Clone, PartialEq, Eq)]
pub struct TotpCode(String);

impl TotpCode {
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProtoError::invalid(
                "code",
                "an authenticator code is 6 digits",
            ));
        }
        Ok(TotpCode(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpCode(<redacted>)")
    }
}

/// Most bytes of a channel password (P553).
pub const MAX_CHANNEL_PASSWORD: usize = 1024;

/// A channel's password as a joiner or admin gives it: 1 to 1,024 bytes; never
/// logged or shown by `Debug` (the server keeps only its argon2id hash, P550).
#[derive(Clone, PartialEq, Eq)]
pub struct ChannelPassword(String);

impl ChannelPassword {
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        if s.is_empty() || s.len() > MAX_CHANNEL_PASSWORD {
            return Err(ProtoError::invalid(
                "password",
                format!("a channel password is 1 to {MAX_CHANNEL_PASSWORD} bytes"),
            ));
        }
        Ok(ChannelPassword(s.to_owned()))
    }

    /// Empty means none.
    pub fn optional(s: &str) -> Result<Option<Self>, ProtoError> {
        if s.is_empty() {
            Ok(None)
        } else {
            Self::parse(s).map(Some)
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ChannelPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChannelPassword(<redacted>)")
    }
}

/// Characters of recovery codes: no 0/o, 1/l/i, so they read aloud and type back.
pub const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz23456789+";

/// Characters in a recovery code, without its separators.
pub const RECOVERY_LEN: usize = 15;

/// A recovery code: 15 characters of [`RECOVERY_ALPHABET`] (75 bits), usually shown
/// in groups of five; case and dashes or spaces are ignored.
#[derive(Clone, PartialEq, Eq)]
pub struct RecoveryCode(String);

impl RecoveryCode {
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let s: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if s.len() != RECOVERY_LEN || !s.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)) {
            return Err(ProtoError::invalid(
                "recovery_code",
                "a recovery code is 15 letters and digits, like abcde-fghjk-mnpqr",
            ));
        }
        Ok(RecoveryCode(s))
    }

    /// The code in groups of five, as shown to the user.
    pub fn display(&self) -> String {
        self.0
            .as_bytes()
            .chunks(5)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// The digest the server stores recovery codes by (they carry 75 random bits, so
    /// a plain hash is enough).
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(self.0.as_bytes()).into()
    }
}

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode(<redacted>)")
    }
}

impl SecondFactor {
    /// Six digits are a code; anything else must be a recovery code.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        let digits = s.chars().filter(|c| !c.is_whitespace()).count();
        if s.chars().all(|c| c.is_ascii_digit() || c.is_whitespace()) && digits > 0 {
            return TotpCode::parse(s).map(SecondFactor::Code);
        }
        RecoveryCode::parse(s).map(SecondFactor::Recovery).map_err(|_| {
            ProtoError::invalid(
                "second_factor",
                "give the 6-digit code from your authenticator app, or one recovery code (like abcde-fghjk-mnpqr)",
            )
        })
    }

    pub fn expose(&self) -> String {
        match self {
            SecondFactor::Code(c) => c.expose().to_owned(),
            SecondFactor::Recovery(r) => r.display(),
        }
    }
}

impl fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecondFactor(<redacted>)")
    }
}

/// A TOTP secret (RFC 6238) as the server hands it out for an authenticator app:
/// 16 to 64 bytes. Redacted from `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    pub fn from_slice(b: &[u8]) -> Result<Self, ProtoError> {
        if !(16..=64).contains(&b.len()) {
            return Err(ProtoError::invalid("secret", "must be 16 to 64 bytes"));
        }
        Ok(TotpSecret(b.to_vec()))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p301_accepts_valid_usernames() {
        for ok in ["ann", "a.b-c_d", "user123", &"x".repeat(32)] {
            assert_eq!(Username::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn p301_rejects_bad_usernames_with_reason() {
        let err = Username::parse("ab").unwrap_err().to_string();
        assert!(err.contains("3 to 32"), "{err}");
        let err = Username::parse(&"x".repeat(33)).unwrap_err().to_string();
        assert!(err.contains("3 to 32"), "{err}");
        for bad in ["Alice", "al ice", "al@ce", "ålice", "ali\u{0}ce"] {
            let err = Username::parse(bad).unwrap_err().to_string();
            assert!(err.contains("lowercase letters"), "{bad}: {err}");
        }
    }

    #[test]
    fn ids_round_trip_through_hex() {
        let id = DeviceId::from_bytes([0xab; 16]);
        assert_eq!(DeviceId::parse_hex(&id.to_string()).unwrap(), id);
        assert!(DeviceId::parse_hex("zz").is_err());
        assert!(DeviceId::from_slice(&[1, 2, 3]).is_err());
    }

    #[test]
    fn p302_p303_optional_profile_fields() {
        assert_eq!(parse_display_name("  ").unwrap(), None);
        assert_eq!(
            parse_display_name("Ann B").unwrap().as_deref(),
            Some("Ann B")
        );
        assert!(parse_display_name(&"x".repeat(65)).is_err());
        assert!(parse_display_name("a\u{7}b").is_err());
        assert_eq!(parse_email("a@b.c").unwrap().as_deref(), Some("a@b.c"));
        assert!(parse_email("nope").is_err());
        assert!(parse_email("a@b@c").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let t = SessionToken::from_bytes([7; 32]);
        assert_eq!(format!("{t:?}"), "SessionToken(<redacted>)");
        let i = InviteCode::parse("secret-code").unwrap();
        assert!(!format!("{i:?}").contains("secret"));
    }

    #[test]
    fn p330_second_factors_parse_to_codes_or_recovery_codes() {
        assert!(matches!(
            SecondFactor::parse("123456"),
            Ok(SecondFactor::Code(_))
        ));
        assert!(matches!(
            SecondFactor::parse(" 123 456 "),
            Ok(SecondFactor::Code(_))
        ));
        for short in ["12345", "1234567", ""] {
            assert!(SecondFactor::parse(short).is_err(), "{short:?}");
        }
        let r = SecondFactor::parse("ABCDE-fghjk-MNPQR").unwrap();
        let SecondFactor::Recovery(r) = r else {
            panic!("not a recovery code")
        };
        assert_eq!(r.display(), "abcde-fghjk-mnpqr");
        assert_eq!(r, RecoveryCode::parse("abcdefghjkmnpqr").unwrap());
        assert!(
            SecondFactor::parse("abcde-fghjk-mnpq0").is_err(),
            "0 is not in the alphabet"
        );
        assert!(SecondFactor::parse("abcde-fghjk").is_err());
        assert_eq!(format!("{r:?}"), "RecoveryCode(<redacted>)");
    }
}
