//! Bad input at start.

use lab_test_support::TestEnv;
use lab_test_support::faults::{build_refuses_a_port_in_use, occupied_port};

use crate::helpers::settings;

#[tokio::test]
async fn a_listen_port_already_in_use_is_an_error_saying_so() {
    let env = TestEnv::builder().start().await;
    let holder = occupied_port();
    let mut settings = settings(&env);
    settings.http.listen = holder.local_addr().unwrap();

    build_refuses_a_port_in_use(
        lab_psp::build,
        settings,
        &holder.local_addr().unwrap().to_string(),
    )
    .await;
}
