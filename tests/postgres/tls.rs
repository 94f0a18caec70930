//! `sslmode=require` / `verify-full` connect with TLS through rustls and verify the server
//! certificate: against `sslrootcert` it works, against the default (webpki) roots a private
//! CA's certificate is refused.

use crate::pg::Cluster;
use crate::pg_settings;
use registrar::store::{ClientStore, PostgresStore};

#[tokio::test]
async fn tls_connections_verify_the_server_certificate() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "registrar test database CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let cluster = Cluster::private_with(false, |data| {
        std::fs::write(data.join("server.crt"), cert.pem()).unwrap();
        let key_path = data.join("server.key");
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        [
            "ssl=on",
            "ssl_cert_file=server.crt",
            "ssl_key_file=server.key",
        ]
        .iter()
        .flat_map(|s| ["-c".to_owned(), s.to_string()])
        .collect()
    });
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let url = cluster.new_database();

    for mode in ["verify-full", "require"] {
        let verified = format!("{url}?sslmode={mode}&sslrootcert={}", ca_path.display());
        let store = PostgresStore::connect(&pg_settings(&verified))
            .await
            .unwrap_or_else(|e| panic!("{mode} with the CA: {e}"));
        store.migrate(0).await.unwrap();
        assert_eq!(store.count().await.unwrap(), 0);

        let unknown_ca = format!("{url}?sslmode={mode}");
        let err = PostgresStore::connect(&pg_settings(&unknown_ca))
            .await
            .err()
            .unwrap_or_else(|| panic!("{mode} accepted a certificate of an unknown CA"))
            .to_string();
        assert!(err.contains("cannot connect"), "{err}");
    }
    cluster.stop_immediate();
}
