//! The test's own PKI, independent of production code and of the PSP: an RSA key (made with the
//! `rsa` crate), a CA that issues its certificate, and a second CA that issues a rogue one.

use base64::Engine as _;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};

/// A CA, a leaf it issued for an RSA key, and a leaf for the same key issued by another CA.
pub struct Pki {
    pub ca_pem: String,
    pub leaf_pem: String,
    pub rogue_leaf_pem: String,
    key: rsa::RsaPrivateKey,
}

impl Pki {
    pub fn generate() -> Self {
        let mut rng = rsa::rand_core::OsRng;
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let leaf_key =
            rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256).unwrap();
        let ca = |name: &str| {
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let cert = params.self_signed(&ca_key).unwrap();
            (cert, ca_key)
        };
        let leaf = |ca: &(rcgen::Certificate, rcgen::KeyPair)| {
            let mut params =
                rcgen::CertificateParams::new(vec!["messageverificationcerts.test".into()])
                    .unwrap();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "webhook signer");
            params.signed_by(&leaf_key, &ca.0, &ca.1).unwrap().pem()
        };
        let trusted = ca("Lab test CA");
        let rogue = ca("Lab test CA");
        Self {
            ca_pem: trusted.0.pem(),
            leaf_pem: leaf(&trusted),
            rogue_leaf_pem: leaf(&rogue),
            key,
        }
    }

    /// Base64 RSA PKCS#1 v1.5 SHA-256 over PayPal's transmission string.
    pub fn sign(&self, message: &str) -> String {
        let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(self.key.clone());
        let signature = signer.sign(message.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
    }
}
