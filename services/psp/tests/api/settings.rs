//! Settings from the environment, as the apphost passes them, and the certificates it prepares.

use lab_psp::{Auto, Settings};

use crate::helpers::cert_dir;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn every_setting_the_apphost_wires_is_read_from_lab_psp_variables() {
    let settings: Settings = lab_config::load_from(
        "psp",
        vars(&[
            ("LAB_PSP__PUBLIC_URL", "http://127.0.0.1:7000"),
            ("LAB_PSP__STRIPE__SECRET_KEY", "sk_test_x"),
            (
                "LAB_PSP__STRIPE__WEBHOOK_URL",
                "http://127.0.0.1:7001/webhooks/stripe",
            ),
            ("LAB_PSP__STRIPE__WEBHOOK_SECRETS", "whsec_a, whsec_b"),
            ("LAB_PSP__PAYPAL__CLIENT_ID", "id"),
            ("LAB_PSP__PAYPAL__CLIENT_SECRET", "secret"),
            (
                "LAB_PSP__PAYPAL__WEBHOOK_URL",
                "http://127.0.0.1:7001/webhooks/paypal",
            ),
            ("LAB_PSP__PAYPAL__WEBHOOK_ID", "WH-1"),
            ("LAB_PSP__PAYPAL__CERT_DIR", "/tmp/lab-certs"),
            ("LAB_PSP__SCENARIO__AUTO", "approve"),
            ("LAB_PSP__WEBHOOKS__MAX_ATTEMPTS", "3"),
        ]),
    )
    .unwrap();

    assert_eq!(settings.public_url, "http://127.0.0.1:7000");
    assert_eq!(settings.stripe.secret_key.expose(), "sk_test_x");
    let secrets: Vec<_> = settings
        .stripe
        .secrets()
        .iter()
        .map(|s| s.expose().to_owned())
        .collect();
    assert_eq!(secrets, ["whsec_a", "whsec_b"]);
    assert_eq!(settings.paypal.client_secret.expose(), "secret");
    assert_eq!(settings.paypal.webhook_id, "WH-1");
    assert_eq!(settings.paypal.cert_dir.to_str(), Some("/tmp/lab-certs"));
    assert_eq!(settings.scenario.auto, Auto::Approve);
    assert_eq!(settings.webhooks.max_attempts, 3);
    assert!(!format!("{settings:?}").contains("secret\""));
}

#[test]
fn an_unknown_scenario_value_is_an_error_naming_the_variable() {
    let result: Result<Settings, _> =
        lab_config::load_from("psp", vars(&[("LAB_PSP__SCENARIO__AUTO", "sometimes")]));

    let error = result.unwrap_err().to_string();

    assert!(error.contains("LAB_PSP__SCENARIO__AUTO"), "{error}");
}

#[test]
fn ensure_reuses_the_certificates_already_in_the_directory() {
    let first = lab_psp::certs::ensure(&cert_dir()).unwrap();

    let second = lab_psp::certs::ensure(&cert_dir()).unwrap();

    assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
    assert_eq!(first.leaf_cert_pem, second.leaf_cert_pem);
}

#[test]
fn ensure_fills_an_empty_directory_with_a_ca_and_a_leaf_it_issued() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("psp-certs-empty-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();

    let certs = lab_psp::certs::ensure(&dir).unwrap();

    let read = lab_psp::certs::SandboxCerts::read(&dir).unwrap();
    assert_eq!(read.ca_cert_pem, certs.ca_cert_pem);
    let (_, ca) = x509_parser::pem::parse_x509_pem(certs.ca_cert_pem.as_bytes()).unwrap();
    let (_, leaf) = x509_parser::pem::parse_x509_pem(certs.leaf_cert_pem.as_bytes()).unwrap();
    let (ca, leaf) = (ca.parse_x509().unwrap(), leaf.parse_x509().unwrap());
    assert!(ca.is_ca());
    leaf.verify_signature(Some(ca.public_key())).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
