//! The orders schema belongs to `orders_owner`, never to the login the service runs as.

use crate::helpers::spawn_app;

#[tokio::test]
async fn every_schema_object_is_owned_by_orders_owner_not_the_login_role() {
    let app = spawn_app().await;

    let migrations_owner = app.env.db().migrations_table_owner("orders").await.unwrap();
    let strays = app
        .env
        .db()
        .objects_not_owned_by_owner("orders")
        .await
        .unwrap();

    assert_eq!(migrations_owner.as_deref(), Some("orders_owner"));
    assert_eq!(strays, Vec::<(String, String)>::new());
}
