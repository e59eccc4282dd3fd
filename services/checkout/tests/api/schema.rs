//! The checkout schema belongs to `checkout_owner`, never to the login the service runs as.

use crate::helpers::spawn_app;

#[tokio::test]
async fn every_schema_object_is_owned_by_checkout_owner_not_the_login_role() {
    let app = spawn_app().await;

    let migrations_owner = app
        .env
        .db()
        .migrations_table_owner("checkout")
        .await
        .unwrap();
    let strays = app
        .env
        .db()
        .objects_not_owned_by_owner("checkout")
        .await
        .unwrap();

    assert_eq!(migrations_owner.as_deref(), Some("checkout_owner"));
    assert_eq!(strays, Vec::<(String, String)>::new());
}
