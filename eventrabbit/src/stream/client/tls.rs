//! TLS for stream connections: rustls (ring), trusting the platform's roots and the CA
//! certificates of `Config::tls_ca_pem`, as the AMQP connections do.

use rustls_platform_verifier::{BuilderVerifierExt, Verifier};
use std::sync::Arc;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

/// The client configuration for `amqps://` nodes; the error says why it cannot be made
/// (a CA PEM that does not parse, or no usable trust store).
pub(crate) fn client_config(ca_pem: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let config = match ca_pem {
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the CA certificates (PEM) do not parse: {e}"))?;
            if certs.is_empty() {
                return Err("the CA PEM holds no certificate".to_owned());
            }
            let verifier = Verifier::new_with_extra_roots(certs, provider)
                .map_err(|e| format!("TLS trust store: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        None => builder
            .with_platform_verifier()
            .map_err(|e| format!("TLS trust store: {e}"))?
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_certificates_is_refused_with_a_reason() {
        let e = client_config(Some("not a pem")).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let e = client_config(Some(
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        ))
        .unwrap_err();
        assert!(e.contains("do not parse"), "{e}");
    }
}
