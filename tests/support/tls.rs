//! Throwaway certificate authorities for servers the tests start on loopback.

use std::time::Duration;

/// A throwaway CA that issues a serving certificate for 127.0.0.1.
pub struct TestCa {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("registrar test CA {name}"));
        let cert = params.self_signed(&key).expect("CA cert");
        TestCa { cert, issuer: rcgen::Issuer::new(params, key) }
    }

    /// Writes a certificate and key for 127.0.0.1 in place (each file replaced at once).
    pub fn issue(&self, cert: &std::path::Path, key: &std::path::Path) {
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        let leaf = params.signed_by(&leaf_key, &self.issuer).expect("leaf");
        for (path, pem) in [(key, leaf_key.serialize_pem()), (cert, leaf.pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, pem).expect("write");
            std::fs::rename(&tmp, path).expect("rename");
        }
    }

    pub fn client(&self) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).expect("CA pem");
        reqwest::Client::builder().tls_certs_only([ca]).timeout(Duration::from_secs(5)).build().expect("client")
    }

    /// The CA certificate, PEM (a caBundle, base64-encoded).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }
}
