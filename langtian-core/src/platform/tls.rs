//! TLS for `lt up`'s embedded nats-server (`lt up --nats-tls`): a private CA and a server
//! certificate for `127.0.0.1`/`localhost`, made once and kept under `<data-dir>/nats/tls`
//! (private keys 0600). The server then requires TLS from every client; clients trust the CA
//! (`--tls-ca <data-dir>/nats/tls/ca.pem`).
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let tls = langtian_core::platform::tls::LocalTls::load_or_create(dir.path()).unwrap();
//! assert!(tls.ca_file.exists());
//! assert!(tls.server_config().contains("cert_file"));
//! ```

use std::path::{Path, PathBuf};

use crate::bus::access::write_private;

/// What went wrong making or reading the TLS files.
#[derive(Debug, thiserror::Error)]
pub enum LocalTlsError {
    /// A file could not be written or read.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Generating a key or a certificate failed.
    #[error("generating the {what}: {reason}")]
    Generate {
        /// Which certificate or key.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// The files of the local CA and the server certificate.
#[derive(Debug, Clone)]
pub struct LocalTls {
    /// The CA certificate clients trust.
    pub ca_file: PathBuf,
    /// The server's certificate (signed by the CA).
    pub cert_file: PathBuf,
    /// The server's private key.
    pub key_file: PathBuf,
}

impl LocalTls {
    /// Reads the files under `dir`, or makes them when any is missing.
    pub fn load_or_create(dir: &Path) -> Result<Self, LocalTlsError> {
        let tls = Self {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("server.pem"),
            key_file: dir.join("server-key.pem"),
        };
        if [&tls.ca_file, &tls.cert_file, &tls.key_file]
            .iter()
            .all(|p| p.is_file())
        {
            return Ok(tls);
        }
        std::fs::create_dir_all(dir).map_err(|e| LocalTlsError::File {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
        let generate = |what: &'static str| {
            move |e: rcgen::Error| LocalTlsError::Generate {
                what,
                reason: e.to_string(),
            }
        };
        let ca_key = rcgen::KeyPair::generate().map_err(generate("CA key"))?;
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate("CA certificate"))?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Langtian local CA (lt up)");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params
            .self_signed(&ca_key)
            .map_err(generate("CA certificate"))?;
        let server_key = rcgen::KeyPair::generate().map_err(generate("server key"))?;
        let mut server_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(generate("server certificate"))?;
        server_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "lt up nats-server");
        server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let server = server_params
            .signed_by(&server_key, &issuer)
            .map_err(generate("server certificate"))?;
        let write = |path: &Path, text: &str, private: bool| {
            let r = if private {
                write_private(path, text)
            } else {
                std::fs::write(path, text)
            };
            r.map_err(|e| LocalTlsError::File {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        };
        // The CA's key is not kept: nothing else is ever signed with it.
        write(&tls.key_file, &server_key.serialize_pem(), true)?;
        write(&tls.cert_file, &server.pem(), false)?;
        write(&tls.ca_file, &ca.pem(), false)?;
        Ok(tls)
    }

    /// The nats-server configuration block that requires TLS from every client.
    pub fn server_config(&self) -> String {
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  timeout: 2\n}}\n",
            self.cert_file.display().to_string(),
            self.key_file.display().to_string()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_made_once_and_the_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalTls::load_or_create(dir.path()).unwrap();
        let ca = std::fs::read_to_string(&a.ca_file).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&a.key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = LocalTls::load_or_create(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&b.ca_file).unwrap(),
            ca,
            "kept, not made again"
        );
        assert!(a.server_config().contains("key_file"));
    }
}
