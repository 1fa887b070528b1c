//! Trust on first use: the first connection to a server records its key fingerprint in
//! `HOME/known_servers` (one `HOST:PORT SHA256:...` per line, like SSH's known_hosts);
//! every later connection must present the same key, or it fails hard.
//!
//! The TLS verifier accepts any certificate but still verifies the handshake signature
//! with the certificate's key, so a peer must hold the private key of the fingerprint
//! it presents. The pin decision is made after the handshake, before any request.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hush_proto::fingerprint::Fingerprint;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::ClientError;

/// How to treat a server whose key this home has not pinned yet.
#[derive(Debug, Clone)]
pub enum FirstUse {
    /// Accept only this fingerprint (`--server-fingerprint`).
    Expect(Fingerprint),
    /// Accept whatever the server presents (`--trust-new-server`).
    TrustNew,
    /// Refuse, telling the user the fingerprint to check.
    Refuse,
}

/// The pins of one home.
pub struct KnownServers {
    path: PathBuf,
}

impl KnownServers {
    pub fn new(home: &Path) -> Self {
        KnownServers {
            path: home.join("known_servers"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entries(&self) -> Result<Vec<(String, Fingerprint)>, ClientError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(ClientError::Home(format!(
                    "reading {}: {e}",
                    self.path.display()
                )));
            }
        };
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line
                .split_once(char::is_whitespace)
                .and_then(|(server, fp)| {
                    Fingerprint::parse(fp)
                        .ok()
                        .map(|fp| (server.to_owned(), fp))
                });
            match parsed {
                Some(entry) => out.push(entry),
                None => {
                    return Err(ClientError::Home(format!(
                        "{} line {}: expected HOST:PORT SHA256:...",
                        self.path.display(),
                        n + 1
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The pinned fingerprint of `server`, if any.
    pub fn pinned(&self, server: &str) -> Result<Option<Fingerprint>, ClientError> {
        Ok(self
            .entries()?
            .into_iter()
            .find(|(s, _)| s == server)
            .map(|(_, fp)| fp))
    }

    /// Pins `server` to `fp`.
    pub fn pin(&self, server: &str, fp: Fingerprint) -> Result<(), ClientError> {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| ClientError::Home(format!("writing {}: {e}", self.path.display())))?;
        writeln!(f, "{server} {fp}")
            .and_then(|_| f.sync_all())
            .map_err(|e| ClientError::Home(format!("writing {}: {e}", self.path.display())))
    }

    /// Decides whether to go on with a server that presented `presented`, pinning it
    /// on first use when the policy allows.
    pub fn check(
        &self,
        server: &str,
        presented: Fingerprint,
        first_use: &FirstUse,
    ) -> Result<(), ClientError> {
        if let Some(pinned) = self.pinned(server)? {
            if pinned != presented {
                return Err(ClientError::FingerprintChanged {
                    server: server.to_owned(),
                    pinned,
                    presented,
                    known_servers: self.path.display().to_string(),
                });
            }
            if let FirstUse::Expect(expected) = first_use
                && *expected != presented
            {
                return Err(ClientError::FingerprintMismatch {
                    server: server.to_owned(),
                    expected: *expected,
                    presented,
                });
            }
            return Ok(());
        }
        match first_use {
            FirstUse::Expect(expected) if *expected != presented => {
                Err(ClientError::FingerprintMismatch {
                    server: server.to_owned(),
                    expected: *expected,
                    presented,
                })
            }
            FirstUse::Expect(_) | FirstUse::TrustNew => {
                tracing::info!(%server, fingerprint = %presented, "pinned a new server key");
                self.pin(server, presented)
            }
            FirstUse::Refuse => Err(ClientError::UnknownServer {
                server: server.to_owned(),
                presented,
            }),
        }
    }
}

/// Records the key the server presents and verifies that it signed the handshake.
#[derive(Debug)]
pub struct RecordingVerifier {
    algorithms: WebPkiSupportedAlgorithms,
    seen: Mutex<Option<Fingerprint>>,
}

impl RecordingVerifier {
    pub fn new(provider: &CryptoProvider) -> Arc<Self> {
        Arc::new(RecordingVerifier {
            algorithms: provider.signature_verification_algorithms,
            seen: Mutex::new(None),
        })
    }

    /// The fingerprint the server presented in the completed handshake.
    pub fn presented(&self) -> Option<Fingerprint> {
        self.seen.lock().ok().and_then(|g| *g)
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let fp = Fingerprint::of_spki(ee.subject_public_key_info().as_ref());
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fp);
        }
        // Trust is decided by the pin after the handshake; see the module docs.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The client config allows TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_use_pins_and_later_changes_fail_hard() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KnownServers::new(dir.path());
        let a = Fingerprint::of_spki(b"a");
        let b = Fingerprint::of_spki(b"b");
        assert!(matches!(
            ks.check("h:1", a, &FirstUse::Refuse),
            Err(ClientError::UnknownServer { .. })
        ));
        assert!(matches!(
            ks.check("h:1", a, &FirstUse::Expect(b)),
            Err(ClientError::FingerprintMismatch { .. })
        ));
        assert!(
            ks.pinned("h:1").unwrap().is_none(),
            "a refused key is not pinned"
        );
        ks.check("h:1", a, &FirstUse::Expect(a)).unwrap();
        assert_eq!(ks.pinned("h:1").unwrap(), Some(a));
        ks.check("h:1", a, &FirstUse::Refuse).unwrap();
        let err = ks.check("h:1", b, &FirstUse::TrustNew).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&a.to_string()) && text.contains(&b.to_string()),
            "{text}"
        );
        ks.check("other:2", b, &FirstUse::TrustNew).unwrap();
        assert_eq!(ks.pinned("other:2").unwrap(), Some(b));
    }

    #[test]
    fn a_corrupt_known_servers_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KnownServers::new(dir.path());
        fs::write(ks.path(), "h:1 garbage\n").unwrap();
        let err = ks.pinned("h:1").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
