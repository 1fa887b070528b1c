//! The server's TLS identity: a key and certificate created on first start (or supplied
//! by the operator), and the fingerprint clients pin (P401).
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hush_proto::fingerprint::Fingerprint;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ServerError;

/// ALPN protocol id of hush over TLS.
pub const ALPN: &[u8] = b"hush/1";

/// The name of the cluster's identity among the store's secrets.
pub const SHARED_SECRET: &str = "tls_identity";

pub struct TlsIdentity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    fingerprint: Fingerprint,
}

// Hand-written: the private key must never reach a log.
impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn err(what: impl fmt::Display) -> ServerError {
    ServerError::Identity(what.to_string())
}

/// The fingerprint of a certificate's public key.
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> Result<Fingerprint, String> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("bad certificate: {e}"))?;
    Ok(Fingerprint::of_spki(ee.subject_public_key_info().as_ref()))
}

/// Writes `data` to `path` atomically, readable only by the owner.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

impl TlsIdentity {
    /// Paths of the self-generated identity inside a data dir.
    pub fn default_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
        let dir = data_dir.join("tls");
        (dir.join("cert.pem"), dir.join("key.pem"))
    }

    /// Loads the identity kept in `data_dir/tls`, creating a self-signed one on first
    /// start. The same key (so the same fingerprint) is used on every later start.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, ServerError> {
        let (cert_path, key_path) = Self::default_paths(data_dir);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => return Self::from_files(&cert_path, &key_path),
            (false, false) => {}
            _ => {
                return Err(err(format!(
                    "only one of {} and {} exists; restore the other or remove both to make a new identity (clients will then see a changed fingerprint)",
                    cert_path.display(),
                    key_path.display()
                )));
            }
        }
        let dir = cert_path.parent().ok_or_else(|| err("bad data dir"))?;
        fs::create_dir_all(dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "hushd".to_owned()])
                .map_err(|e| err(format!("generating a key: {e}")))?;
        // Key first: a cert without its key is the state refused above.
        write_private(&key_path, generated.signing_key.serialize_pem().as_bytes())
            .map_err(|e| err(format!("writing {}: {e}", key_path.display())))?;
        write_private(&cert_path, generated.cert.pem().as_bytes())
            .map_err(|e| err(format!("writing {}: {e}", cert_path.display())))?;
        tracing::info!(path = %cert_path.display(), "created a new TLS identity");
        Self::from_files(&cert_path, &key_path)
    }

    /// Loads an operator-supplied PEM certificate chain and private key.
    pub fn from_files(cert_path: &Path, key_path: &Path) -> Result<Self, ServerError> {
        let certs = CertificateDer::pem_file_iter(cert_path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| err(format!("reading {}: {e}", cert_path.display())))?;
        let leaf = certs
            .first()
            .ok_or_else(|| err(format!("{} holds no certificate", cert_path.display())))?;
        let fingerprint = fingerprint_of(leaf).map_err(err)?;
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| err(format!("reading {}: {e}", key_path.display())))?;
        Ok(TlsIdentity {
            certs,
            key,
            fingerprint,
        })
    }

    /// A new self-signed identity as one PEM bundle (private key, then certificate).
    pub fn generate_pem() -> Result<Vec<u8>, ServerError> {
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "hushd".to_owned()])
                .map_err(|e| err(format!("generating a key: {e}")))?;
        let mut pem = generated.signing_key.serialize_pem().into_bytes();
        pem.extend_from_slice(generated.cert.pem().as_bytes());
        Ok(pem)
    }

    /// Reads a PEM bundle holding a private key and a certificate chain (leaf first).
    pub fn from_pem(bundle: &[u8]) -> Result<Self, ServerError> {
        let certs = CertificateDer::pem_slice_iter(bundle)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("reading the identity's certificate: {e}")))?;
        let leaf = certs
            .first()
            .ok_or_else(|| err("the identity holds no certificate"))?;
        let fingerprint = fingerprint_of(leaf).map_err(err)?;
        let key = PrivateKeyDer::from_pem_slice(bundle)
            .map_err(|e| err(format!("reading the identity's key: {e}")))?;
        Ok(TlsIdentity {
            certs,
            key,
            fingerprint,
        })
    }

    /// A data dir's identity as a PEM bundle, if it has one (what `hushd migrate`
    /// carries into a cluster, so clients keep their pinned fingerprint).
    pub fn bundle_in(data_dir: &Path) -> Result<Option<Vec<u8>>, ServerError> {
        let (cert_path, key_path) = Self::default_paths(data_dir);
        if !cert_path.exists() || !key_path.exists() {
            return Ok(None);
        }
        let read = |p: &Path| fs::read(p).map_err(|e| err(format!("reading {}: {e}", p.display())));
        let mut pem = read(&key_path)?;
        pem.push(b'\n');
        pem.extend(read(&cert_path)?);
        Self::from_pem(&pem)?;
        Ok(Some(pem))
    }

    /// The identity every node of a cluster presents (ADR 0007): kept in the shared
    /// database as the secret [`SHARED_SECRET`], made by the first node to start.
    pub async fn shared(store: &dyn hush_store::Store) -> Result<Self, ServerError> {
        let fresh = Self::generate_pem()?;
        let pem = store
            .secret_or_init(SHARED_SECRET, fresh)
            .await
            .map_err(|e| err(format!("loading the cluster's identity: {e}")))?;
        Self::from_pem(&pem)
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// A TLS 1.3-only server configuration for this identity.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, ServerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        // Clients resume with their session token, never a TLS ticket: issuing and
        // caching tickets would only cost every handshake CPU and the server memory.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shared_identity_is_made_once_and_the_same_for_every_node() {
        let store = hush_store::memory::MemoryStore::new();
        let a = TlsIdentity::shared(&store).await.unwrap();
        let b = TlsIdentity::shared(&store).await.unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.server_config().unwrap();
    }

    #[test]
    fn a_data_dirs_identity_becomes_a_bundle_with_the_same_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        assert!(TlsIdentity::bundle_in(dir.path()).unwrap().is_none());
        let own = TlsIdentity::load_or_create(dir.path()).unwrap();
        let bundle = TlsIdentity::bundle_in(dir.path()).unwrap().unwrap();
        assert_eq!(
            TlsIdentity::from_pem(&bundle).unwrap().fingerprint(),
            own.fingerprint()
        );
        assert!(TlsIdentity::from_pem(b"not pem").is_err());
    }

    #[test]
    fn identity_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = TlsIdentity::load_or_create(dir.path()).unwrap();
        let second = TlsIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.fingerprint(), second.fingerprint());
        assert!(first.server_config().is_ok());
        assert!(!format!("{first:?}").contains("PRIVATE"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let (_, key) = TlsIdentity::default_paths(dir.path());
            let mode = fs::metadata(key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        }
    }

    #[test]
    fn half_an_identity_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        TlsIdentity::load_or_create(dir.path()).unwrap();
        let (cert, _) = TlsIdentity::default_paths(dir.path());
        fs::remove_file(cert).unwrap();
        let e = TlsIdentity::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("only one of"), "{e}");
    }
}
