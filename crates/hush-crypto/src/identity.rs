//! A device's MLS identity: an Ed25519 signature key and a basic credential whose
//! identity is the device's [`DeviceCertificate`]: the opaque device id and the account
//! key that vouches for it, never the username (external commits travel as
//! PublicMessages, visible to the server).
use hush_proto::ids::DeviceId;
use openmls::prelude::tls_codec::{Deserialize, Serialize};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, KeyPackage, KeyPackageIn, OpenMlsProvider, ProtocolVersion,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::signatures::Signer;

use crate::account::{AccountKey, DeviceCertificate};
use crate::{CIPHERSUITE, CryptoError, internal, rejected};

/// A device's signing identity.
pub struct Identity {
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    certificate: DeviceCertificate,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

fn credential(cert: &DeviceCertificate, signer: &SignatureKeyPair) -> CredentialWithKey {
    CredentialWithKey {
        credential: BasicCredential::new(cert.encode()).into(),
        signature_key: signer.to_public_vec().into(),
    }
}

/// The certificate a credential carries, not yet verified (P501, P541).
pub fn certificate_of(
    credential: &openmls::prelude::Credential,
) -> Result<DeviceCertificate, CryptoError> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|e| rejected("credential is not a basic credential", e))?;
    DeviceCertificate::decode(basic.identity())
}

/// The device id a credential names (P501).
pub fn device_of(credential: &openmls::prelude::Credential) -> Result<DeviceId, CryptoError> {
    Ok(certificate_of(credential)?.device)
}

/// Verifies a leaf: its certificate is signed by the account key it names, over the
/// leaf's own signature key (P541).
pub fn verify_leaf(
    credential: &openmls::prelude::Credential,
    signature_key: &[u8],
) -> Result<DeviceCertificate, CryptoError> {
    let cert = certificate_of(credential)?;
    cert.verify(signature_key)?;
    Ok(cert)
}

impl Identity {
    /// Creates a new identity certified by the account key, and stores its private key
    /// in the provider's storage.
    pub fn generate<P: OpenMlsProvider>(
        provider: &P,
        device: DeviceId,
        account: &AccountKey,
        created_at: u64,
    ) -> Result<Self, CryptoError> {
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm())
            .map_err(|e| internal("generating a signature key", e))?;
        signer
            .store(provider.storage())
            .map_err(|e| CryptoError::Storage(format!("{e:?}")))?;
        let certificate = account.certify(device, &signer.to_public_vec(), created_at);
        Ok(Identity {
            credential: credential(&certificate, &signer),
            signer,
            certificate,
        })
    }

    /// Loads the identity whose public key is `public_key`, with its stored certificate.
    pub fn load<P: OpenMlsProvider>(
        provider: &P,
        public_key: &[u8],
        certificate: &[u8],
    ) -> Result<Self, CryptoError> {
        let signer = SignatureKeyPair::read(
            provider.storage(),
            public_key,
            CIPHERSUITE.signature_algorithm(),
        )
        .ok_or_else(|| {
            CryptoError::Missing("this device's signature key is not in its store".into())
        })?;
        let certificate = DeviceCertificate::decode(certificate)
            .map_err(|e| CryptoError::Storage(format!("this device's certificate: {e}")))?;
        Ok(Identity {
            credential: credential(&certificate, &signer),
            signer,
            certificate,
        })
    }

    /// Test-only: an identity whose credential carries `certificate` as given, so
    /// tests can show that forged certificates are refused.
    #[cfg(test)]
    pub(crate) fn forged<P: OpenMlsProvider>(provider: &P, certificate: DeviceCertificate) -> Self {
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        Identity {
            credential: credential(&certificate, &signer),
            signer,
            certificate,
        }
    }

    pub fn device(&self) -> DeviceId {
        self.certificate.device
    }

    pub fn certificate(&self) -> &DeviceCertificate {
        &self.certificate
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.signer.to_public_vec()
    }

    pub(crate) fn signer(&self) -> &impl Signer {
        &self.signer
    }

    pub(crate) fn credential(&self) -> &CredentialWithKey {
        &self.credential
    }

    /// Creates `n` one-time key packages (serialized), their private parts stored.
    pub fn key_packages<P: OpenMlsProvider>(
        &self,
        provider: &P,
        n: usize,
    ) -> Result<Vec<Vec<u8>>, CryptoError> {
        (0..n).map(|_| self.key_package(provider, false)).collect()
    }

    /// A last-resort key package: handed out when the one-time ones run out.
    pub fn last_resort_key_package<P: OpenMlsProvider>(
        &self,
        provider: &P,
    ) -> Result<Vec<u8>, CryptoError> {
        self.key_package(provider, true)
    }

    fn key_package<P: OpenMlsProvider>(
        &self,
        provider: &P,
        last_resort: bool,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut builder =
            KeyPackage::builder().leaf_node_capabilities(crate::conversation::capabilities());
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(CIPHERSUITE, provider, &self.signer, self.credential.clone())
            .map_err(|e| internal("building a key package", e))?;
        bundle
            .key_package()
            .tls_serialize_detached()
            .map_err(|e| internal("serializing a key package", e))
    }
}

/// Parses and verifies a key package the server handed out for `device` (P502): its
/// signature, ciphersuite and lifetime, that its credential names that device, and that
/// the account key in its certificate signed it (P541). Which user that account is, the
/// caller decides from its pins.
pub fn validate_key_package<P: OpenMlsProvider>(
    provider: &P,
    bytes: &[u8],
    device: DeviceId,
) -> Result<(KeyPackage, DeviceCertificate), CryptoError> {
    let kp = KeyPackageIn::tls_deserialize_exact(bytes).map_err(|e| rejected("key package", e))?;
    let kp = kp
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| rejected("key package", e))?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err(crate::malformed("key package has the wrong ciphersuite"));
    }
    let cert = verify_leaf(
        kp.leaf_node().credential(),
        kp.leaf_node().signature_key().as_slice(),
    )?;
    if cert.device != device {
        return Err(crate::malformed(format!(
            "key package for device {device} names device {}",
            cert.device
        )));
    }
    Ok((kp, cert))
}
