//! A device's MLS identity: an Ed25519 signature key and a basic credential whose
//! identity is the opaque device id, never the username (external commits travel as
//! PublicMessages, visible to the server).
use hush_proto::ids::DeviceId;
use openmls::prelude::tls_codec::{Deserialize, Serialize};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, KeyPackage, KeyPackageIn, OpenMlsProvider, ProtocolVersion,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_traits::signatures::Signer;

use crate::{CIPHERSUITE, CryptoError, internal, rejected};

/// A device's signing identity.
pub struct Identity {
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    device: DeviceId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn credential(device: DeviceId, signer: &SignatureKeyPair) -> CredentialWithKey {
    CredentialWithKey {
        credential: BasicCredential::new(device.as_bytes().to_vec()).into(),
        signature_key: signer.to_public_vec().into(),
    }
}

/// The device id a credential names (P501).
pub fn device_of(credential: &openmls::prelude::Credential) -> Result<DeviceId, CryptoError> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|e| rejected("credential is not a basic credential", e))?;
    DeviceId::from_slice(basic.identity()).map_err(|e| rejected("credential", e))
}

impl Identity {
    /// Creates a new identity and stores its private key in the provider's storage.
    pub fn generate<P: OpenMlsProvider>(
        provider: &P,
        device: DeviceId,
    ) -> Result<Self, CryptoError> {
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm())
            .map_err(|e| internal("generating a signature key", e))?;
        signer
            .store(provider.storage())
            .map_err(|e| CryptoError::Storage(format!("{e:?}")))?;
        Ok(Identity {
            credential: credential(device, &signer),
            signer,
            device,
        })
    }

    /// Loads the identity whose public key is `public_key`.
    pub fn load<P: OpenMlsProvider>(
        provider: &P,
        device: DeviceId,
        public_key: &[u8],
    ) -> Result<Self, CryptoError> {
        let signer = SignatureKeyPair::read(
            provider.storage(),
            public_key,
            CIPHERSUITE.signature_algorithm(),
        )
        .ok_or_else(|| {
            CryptoError::Missing("this device's signature key is not in its store".into())
        })?;
        Ok(Identity {
            credential: credential(device, &signer),
            signer,
            device,
        })
    }

    pub fn device(&self) -> DeviceId {
        self.device
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
/// signature, ciphersuite and lifetime, and that its credential names that device.
pub fn validate_key_package<P: OpenMlsProvider>(
    provider: &P,
    bytes: &[u8],
    device: DeviceId,
) -> Result<KeyPackage, CryptoError> {
    let kp = KeyPackageIn::tls_deserialize_exact(bytes).map_err(|e| rejected("key package", e))?;
    let kp = kp
        .validate(provider.crypto(), ProtocolVersion::Mls10)
        .map_err(|e| rejected("key package", e))?;
    if kp.ciphersuite() != CIPHERSUITE {
        return Err(crate::malformed("key package has the wrong ciphersuite"));
    }
    let named = device_of(kp.leaf_node().credential())?;
    if named != device {
        return Err(crate::malformed(format!(
            "key package for device {device} names device {named}"
        )));
    }
    Ok(kp)
}
