//! The sandbox's certificate authority and its webhook-signing certificate.
//!
//! Real PayPal signs webhooks with a key whose certificate chains to a public CA; the sandbox
//! makes its own CA and a leaf certificate for the signing key (RSA 2048, SHA256withRSA, one
//! year). The apphost calls [`ensure`] on one directory before it starts psp and payments, so the
//! PSP signs with the leaf and payments trusts the CA, and both survive restarts unchanged.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Duration, Utc};
use lab_config::SecretString;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_RSA_SHA256,
};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

/// The CA's certificate (PEM): what payments is configured to trust.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key (PKCS#8 PEM); kept so the leaf can be reissued by hand.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The signing certificate (PEM), served at `/paypal/certs/leaf.pem`.
pub const LEAF_CERT_FILE: &str = "leaf.pem";
/// The signing key (PKCS#8 PEM) the PSP signs PayPal webhooks with.
pub const LEAF_KEY_FILE: &str = "leaf-key.pem";

/// RSA 2048: PayPal's own webhook certificates use it, and ring signs with nothing smaller.
const KEY_BITS: usize = 2048;
/// A sandbox CA lives a year: long enough never to expire under a demo, short enough to be
/// obviously not for production.
const VALIDITY_DAYS: i64 = 365;

/// Why the certificates could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating an RSA key: {0}")]
    Key(#[from] rsa::Error),
    #[error("encoding an RSA key: {0}")]
    Encode(#[from] rsa::pkcs8::Error),
    #[error("making a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The sandbox CA and the leaf certificate of the webhook-signing key, all PEM.
#[derive(Clone, Debug)]
pub struct SandboxCerts {
    /// The CA certificate; payments trusts it.
    pub ca_cert_pem: String,
    /// The CA's private key.
    pub ca_key_pem: SecretString,
    /// The leaf certificate, issued by the CA for the signing key.
    pub leaf_cert_pem: String,
    /// The signing key.
    pub leaf_key_pem: SecretString,
}

impl SandboxCerts {
    /// A fresh CA and a leaf signed by it. Key generation takes a second or so.
    pub fn generate() -> Result<Self, CertError> {
        let (ca_key_pem, ca_key) = rsa_key_pair()?;
        let mut ca = params("Lab Sandbox PSP CA")?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;

        let (leaf_key_pem, leaf_key) = rsa_key_pair()?;
        let mut leaf = params("Lab Sandbox PSP webhook signing")?;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key)?;
        Ok(Self {
            ca_cert_pem: ca_cert.pem(),
            ca_key_pem,
            leaf_cert_pem: leaf_cert.pem(),
            leaf_key_pem,
        })
    }

    /// Reads the four files from `dir`.
    pub fn read(dir: &Path) -> Result<Self, CertError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| CertError::Io { path, source })
        };
        Ok(Self {
            ca_cert_pem: read(CA_CERT_FILE)?,
            ca_key_pem: SecretString::new(read(CA_KEY_FILE)?),
            leaf_cert_pem: read(LEAF_CERT_FILE)?,
            leaf_key_pem: SecretString::new(read(LEAF_KEY_FILE)?),
        })
    }

    /// Writes the four files into `dir`, creating it.
    pub fn write(&self, dir: &Path) -> Result<(), CertError> {
        let io = |path: PathBuf| move |source| CertError::Io { path, source };
        fs::create_dir_all(dir).map_err(io(dir.to_owned()))?;
        for (name, text) in [
            (CA_CERT_FILE, self.ca_cert_pem.as_str()),
            (CA_KEY_FILE, self.ca_key_pem.expose()),
            (LEAF_CERT_FILE, self.leaf_cert_pem.as_str()),
            (LEAF_KEY_FILE, self.leaf_key_pem.expose()),
        ] {
            let path = dir.join(name);
            fs::write(&path, text).map_err(io(path))?;
        }
        Ok(())
    }
}

/// The certificates in `dir`, made and written there first if any file is missing.
///
/// Safe to call from several processes at once (the apphost and parallel tests do): a new set
/// is written to a sibling directory and renamed into place, and a loser of that race reads the
/// winner's set, so every caller ends up with the same CA.
pub fn ensure(dir: &Path) -> Result<SandboxCerts, CertError> {
    if complete(dir) {
        return SandboxCerts::read(dir);
    }
    let certs = SandboxCerts::generate()?;
    let staging = dir.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
    certs.write(&staging)?;
    // Renaming onto an empty directory succeeds; onto a full one it fails, and then whoever
    // filled it won.
    let renamed = fs::rename(&staging, dir).is_ok();
    if !renamed {
        let _ = fs::remove_dir_all(&staging);
        if complete(dir) {
            return SandboxCerts::read(dir);
        }
        // The directory holds other things but not our set: write into it directly.
        certs.write(dir)?;
    }
    Ok(certs)
}

fn complete(dir: &Path) -> bool {
    [CA_CERT_FILE, CA_KEY_FILE, LEAF_CERT_FILE, LEAF_KEY_FILE]
        .iter()
        .all(|name| dir.join(name).is_file())
}

/// A new RSA key as PKCS#8 PEM and as an rcgen key pair that signs with SHA256withRSA.
/// ring cannot generate RSA keys, so `rsa` makes it and rcgen (ring) signs with it.
fn rsa_key_pair() -> Result<(SecretString, KeyPair), CertError> {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS)?;
    let der = key.to_pkcs8_der()?;
    let pem = key.to_pkcs8_pem(LineEnding::LF)?;
    let pair = KeyPair::from_pkcs8_der_and_sign_algo(&der.as_bytes().into(), &PKCS_RSA_SHA256)?;
    Ok((SecretString::new(pem.as_str()), pair))
}

/// Parameters valid from yesterday (clock skew) for [`VALIDITY_DAYS`].
fn params(common_name: &str) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "Lab");
    params.distinguished_name = name;
    let ymd = |day: chrono::DateTime<Utc>| {
        // Months and days are small: the casts cannot truncate.
        rcgen::date_time_ymd(day.year(), day.month() as u8, day.day() as u8)
    };
    let now = Utc::now();
    params.not_before = ymd(now - Duration::days(1));
    params.not_after = ymd(now + Duration::days(VALIDITY_DAYS));
    Ok(params)
}
