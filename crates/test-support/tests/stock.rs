//! The stock service as an RM, through real HTTP on real Postgres: Try reserves, Confirm deducts,
//! Cancel releases, each once whatever the duplicates; insufficient stock is refused; the
//! product view and seeding. State is checked in the database, not only in the status codes.

use diesel::prelude::*;
use serde_json::{json, Value};
use test_support::rm::{assert_failure, assert_success, Rm};
use test_support::spawn::{join_in_turns, spawn_stock, spawn_stock_with, Turn, TEST_SEED_PRODUCTS};
use test_support::TestDb;

const STOCK: i64 = 1_000_000;

/// The stock service under test: the calls every RM test makes ([`Rm`]) plus its own views
/// ([`StockViews`]).
type Stock = Rm;

/// One row of `reservations`: (gid, product_id, quantity, state).
type ReservationRow = (String, i64, i64, String);

/// What only the stock service shows: products and reservations.
trait StockViews {
    /// The stock service on a fresh database.
    async fn start() -> Stock;
    /// `GET /api/products/{id}`, asserting 200.
    async fn product(&self, id: i64) -> Value;
    /// `(stock, reserved, available)` of a product, through the API.
    async fn levels(&self, id: i64) -> (i64, i64, i64);
    /// Every reservation, in insertion order.
    fn reservations(&self) -> Vec<ReservationRow>;
}

impl StockViews for Stock {
    async fn start() -> Stock {
        Stock::from(spawn_stock().await)
    }

    async fn product(&self, id: i64) -> Value {
        self.view(&format!("/api/products/{id}")).await
    }

    async fn levels(&self, id: i64) -> (i64, i64, i64) {
        let p = self.product(id).await;
        (
            p["stock"].as_i64().unwrap(),
            p["reserved"].as_i64().unwrap(),
            p["available"].as_i64().unwrap(),
        )
    }

    fn reservations(&self) -> Vec<ReservationRow> {
        use stock::schema::reservations::dsl::*;
        self.load(
            reservations
                .select((gid, product_id, quantity, state))
                .order(id),
        )
    }
}

fn reserve(product_id: i64, quantity: i64) -> Value {
    json!({ "product_id": product_id, "quantity": quantity })
}

fn reservation(gid: &str, product_id: i64, quantity: i64, state: &str) -> ReservationRow {
    (gid.into(), product_id, quantity, state.into())
}

#[tokio::test]
async fn try_reserves_confirm_deducts_and_a_repeated_confirm_changes_nothing() {
    let stock = Stock::start().await;

    assert_success(&stock.call("StockTry", "g1", "try", &reserve(3, 4)).await);
    assert_eq!(stock.levels(3).await, (STOCK, 4, STOCK - 4));

    for _ in 0..2 {
        assert_success(
            &stock
                .call("StockConfirm", "g1", "confirm", &reserve(3, 4))
                .await,
        );
        assert_eq!(stock.levels(3).await, (STOCK - 4, 0, STOCK - 4));
    }
    assert_eq!(
        stock.reservations(),
        vec![reservation("g1", 3, 4, "confirmed")]
    );
}

#[tokio::test]
async fn cancel_releases_the_reserved_units_once() {
    let stock = Stock::start().await;

    assert_success(&stock.call("StockTry", "g1", "try", &reserve(2, 5)).await);
    for _ in 0..2 {
        assert_success(
            &stock
                .call("StockCancel", "g1", "cancel", &reserve(2, 5))
                .await,
        );
        assert_eq!(stock.levels(2).await, (STOCK, 0, STOCK));
    }
    assert_eq!(
        stock.reservations(),
        vec![reservation("g1", 2, 5, "cancelled")]
    );
}

#[tokio::test]
async fn a_cancel_without_try_and_the_try_after_it_change_nothing() {
    let stock = Stock::start().await;

    assert_success(
        &stock
            .call("StockCancel", "g1", "cancel", &reserve(1, 5))
            .await,
    );
    assert_success(&stock.call("StockTry", "g1", "try", &reserve(1, 5)).await);

    assert_eq!(stock.levels(1).await, (STOCK, 0, STOCK));
    assert!(stock.reservations().is_empty());
}

#[tokio::test]
async fn a_try_confirm_and_cancel_each_sent_twice_concurrently_apply_once() {
    let stock = Stock::start().await;
    let body = reserve(1, 7);

    let (a, b) = tokio::join!(
        stock.call("StockTry", "g1", "try", &body),
        stock.call("StockTry", "g1", "try", &body)
    );
    assert_success(&a);
    assert_success(&b);
    assert_eq!(stock.levels(1).await, (STOCK, 7, STOCK - 7));
    let (a, b) = tokio::join!(
        stock.call("StockConfirm", "g1", "confirm", &body),
        stock.call("StockConfirm", "g1", "confirm", &body)
    );
    assert_success(&a);
    assert_success(&b);
    assert_eq!(stock.levels(1).await, (STOCK - 7, 0, STOCK - 7));

    assert_success(&stock.call("StockTry", "g2", "try", &reserve(2, 3)).await);
    let (a, b) = tokio::join!(
        stock.call("StockCancel", "g2", "cancel", &body),
        stock.call("StockCancel", "g2", "cancel", &body)
    );
    assert_success(&a);
    assert_success(&b);
    assert_eq!(stock.levels(2).await, (STOCK, 0, STOCK));
    assert_eq!(
        stock.reservations(),
        vec![
            reservation("g1", 1, 7, "confirmed"),
            reservation("g2", 2, 3, "cancelled"),
        ]
    );
}

#[tokio::test]
async fn a_try_racing_its_cancel_leaves_no_reservation_whichever_wins() {
    let stock = Stock::start().await;
    for i in 0..20 {
        let gid = format!("race-{i}");
        let body = reserve(1, 3);
        let try_ = stock.call("StockTry", &gid, "try", &body);
        let cancel = stock.call("StockCancel", &gid, "cancel", &body);
        // Try first, Cancel first, both at once: both orders reach the barrier.
        let (a, b) = join_in_turns(i, try_, cancel).await;
        assert_success(&a);
        assert_success(&b);
        let reserved = stock.reservations().iter().any(|r| r.0 == gid);
        match Turn::of(i) {
            Turn::AFirst => assert!(reserved, "{gid}: the Try came first, so it reserved"),
            Turn::BFirst => assert!(!reserved, "{gid}: the Cancel came first, the Try must hang"),
            Turn::Race => {}
        }
    }
    // Cancel first: an empty compensation, and the late Try reserves nothing (hanging).
    // Try first: the Cancel releases its reservation.
    assert_eq!(stock.levels(1).await, (STOCK, 0, STOCK));
    assert!(
        stock.reservations().iter().all(|r| r.3 == "cancelled"),
        "{:?}",
        stock.reservations()
    );
}

#[tokio::test]
async fn insufficient_stock_is_a_409_failure_and_concurrent_trys_never_oversell() {
    let stock = Stock::start().await;
    stock.sql("UPDATE products SET stock = 3 WHERE id = 4");

    assert_failure(
        &stock.call("StockTry", "g1", "try", &reserve(4, 4)).await,
        "insufficient stock: product 4 has 3 available, 4 requested",
    );
    assert_eq!(stock.levels(4).await, (3, 0, 3));
    assert_eq!(stock.barrier_rows(), 0);

    // Five concurrent Trys of one unit each on three units: exactly three succeed.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..5 {
        let http = stock.http.clone();
        let url = stock.spawned.url(&format!(
            "/api/StockTry?gid=c{i}&trans_type=tcc&branch_id=01&op=try"
        ));
        let token = test_support::spawn::test_gid_token(&format!("c{i}"));
        calls.spawn(async move {
            let response = http
                .post(url)
                .header(tcc::signing::GID_TOKEN_HEADER, token)
                .json(&reserve(4, 1))
                .send()
                .await;
            response.expect("stock answers").status().as_u16()
        });
    }
    let mut statuses = calls.join_all().await;
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 409, 409]);
    assert_eq!(stock.levels(4).await, (3, 3, 0));

    assert_failure(
        &stock.call("StockTry", "g2", "try", &reserve(99, 1)).await,
        "product 99 does not exist",
    );
    assert_failure(
        &stock
            .call("StockTry", "g3", "try", &reserve(5, i64::MAX))
            .await,
        "insufficient stock",
    );
}

#[tokio::test]
async fn confirm_deducts_the_reserved_quantity_whatever_its_body_says() {
    let stock = Stock::start().await;

    assert_success(&stock.call("StockTry", "g1", "try", &reserve(1, 2)).await);
    assert_success(
        &stock
            .call("StockConfirm", "g1", "confirm", &reserve(5, 500))
            .await,
    );
    assert_eq!(stock.levels(1).await, (STOCK - 2, 0, STOCK - 2));
    assert_eq!(stock.levels(5).await, (STOCK, 0, STOCK));
}

#[tokio::test]
async fn a_cancel_fault_error_1_fails_the_first_cancel_and_the_retry_applies_once() {
    let stock = Stock::start().await;
    let body = json!({ "product_id": 1, "quantity": 2, "fault": { "cancel": "error:1" } });

    assert_success(&stock.call("StockTry", "g1", "try", &body).await);
    let (status, answer) = stock.call("StockCancel", "g1", "cancel", &body).await;
    assert_eq!(
        (status, &answer["error"]),
        (500, &json!("injected_error")),
        "{answer}"
    );
    assert_eq!(stock.levels(1).await, (STOCK, 2, STOCK - 2));

    assert_success(&stock.call("StockCancel", "g1", "cancel", &body).await);
    assert_success(&stock.call("StockCancel", "g1", "cancel", &body).await);
    assert_eq!(stock.levels(1).await, (STOCK, 0, STOCK));
}

#[tokio::test]
async fn a_confirm_or_cancel_whose_body_the_stock_service_cannot_parse_still_settles_the_reservation(
) {
    let stock = Stock::start().await;
    // (name, content type, body): the data the AP registered with a field this version does not
    // know, or renamed, or no JSON object at all.
    let bodies = [
        (
            "an extra field",
            "application/json",
            r#"{"product_id":1,"quantity":1,"price":0}"#,
        ),
        (
            "renamed fields",
            "application/json",
            r#"{"sku":1,"units":1}"#,
        ),
        ("null", "application/json", "null"),
        ("an array", "application/json", "[1, 1]"),
        ("non-JSON text", "application/json", "not json at all"),
        ("an empty body", "application/json", ""),
        ("a text/plain body", "text/plain", "hello"),
        (
            "a fault that does not parse",
            "application/json",
            r#"{"fault":{"cancel":"explode","confirm":"explode"}}"#,
        ),
    ];
    let query = |gid: &str, op: &str| format!("gid={gid}&trans_type=tcc&branch_id=01&op={op}");
    let mut expected = Vec::new();
    for (i, (what, content_type, body)) in bodies.into_iter().enumerate() {
        let (cancelled, confirmed) = (format!("cancel-{i}"), format!("confirm-{i}"));
        for gid in [&cancelled, &confirmed] {
            assert_success(&stock.call("StockTry", gid, "try", &reserve(1, 2)).await);
        }
        let answer = stock
            .raw(
                "StockCancel",
                &query(&cancelled, "cancel"),
                content_type,
                body.into(),
            )
            .await;
        assert_eq!(answer.0, 200, "Cancel with {what}: {}", answer.1);
        assert_success(&answer);
        let answer = stock
            .raw(
                "StockConfirm",
                &query(&confirmed, "confirm"),
                content_type,
                body.into(),
            )
            .await;
        assert_eq!(answer.0, 200, "Confirm with {what}: {}", answer.1);
        assert_success(&answer);
        expected.push(reservation(&cancelled, 1, 2, "cancelled"));
        expected.push(reservation(&confirmed, 1, 2, "confirmed"));
    }

    // Each reservation was settled by its own quantity, not by the body's.
    assert_eq!(stock.reservations(), expected);
    let sold = 2 * bodies.len() as i64;
    assert_eq!(stock.levels(1).await, (STOCK - sold, 0, STOCK - sold));
}

#[tokio::test]
async fn a_fault_in_a_confirm_body_is_honoured_beside_fields_the_stock_service_does_not_know() {
    let stock = Stock::start().await;
    assert_success(&stock.call("StockTry", "g1", "try", &reserve(1, 2)).await);
    let confirm = json!({ "sku": 1, "fault": { "confirm": "error:1" } });

    let (status, answer) = stock.call("StockConfirm", "g1", "confirm", &confirm).await;
    assert_eq!(
        (status, &answer["error"]),
        (500, &json!("injected_error")),
        "{answer}"
    );
    assert_eq!(stock.levels(1).await, (STOCK, 2, STOCK - 2));
    assert_success(&stock.call("StockConfirm", "g1", "confirm", &confirm).await);
    assert_eq!(stock.levels(1).await, (STOCK - 2, 0, STOCK - 2));
}

#[tokio::test]
async fn malformed_requests_are_4xx_json_errors_and_change_nothing() {
    let stock = Stock::start().await;
    for (what, body, code) in [
        ("zero quantity", reserve(1, 0), "invalid_request"),
        ("negative product", reserve(-1, 1), "invalid_request"),
        (
            "unknown field",
            json!({"product_id": 1, "quantity": 1, "price": 0}),
            "invalid_json",
        ),
        ("missing quantity", json!({"product_id": 1}), "invalid_json"),
    ] {
        let (status, answer) = stock.call("StockTry", "g1", "try", &body).await;
        assert_eq!(
            (status, &answer["error"]),
            (400, &json!(code)),
            "{what}: {answer}"
        );
    }
    let (status, answer) = stock.call("StockTry", "g1", "cancel", &reserve(1, 1)).await;
    assert_eq!(
        (status, &answer["error"]),
        (400, &json!("op_mismatch")),
        "{answer}"
    );

    assert_eq!(stock.levels(1).await, (STOCK, 0, STOCK));
    assert!(stock.reservations().is_empty());
    assert_eq!(stock.barrier_rows(), 0);
}

#[tokio::test]
async fn the_product_view_shows_price_and_levels_and_answers_404_for_an_unknown_product() {
    let stock = Stock::start().await;

    let product = stock.product(3).await;
    assert_eq!(product["id"], 3);
    assert_eq!(product["name"], "Product 3");
    assert_eq!(product["price"], 300);
    assert_eq!(product["available"], STOCK);
    assert!(product["updated_at"].is_string(), "{product}");

    let unknown = stock
        .get(&format!("/api/products/{}", TEST_SEED_PRODUCTS + 1))
        .await;
    assert_eq!(
        (unknown.0, &unknown.1["error"]),
        (404, &json!("product_not_found"))
    );
    let bad = stock.get("/api/products/x").await;
    assert_eq!((bad.0, &bad.1["error"]), (400, &json!("invalid_path")));
}

#[tokio::test]
async fn seeding_uses_the_settings_and_never_overwrites_existing_rows() {
    let stock = Stock::from(
        spawn_stock_with(TestDb::create("stock"), |s| {
            s.seed_products = 4;
            s.seed_stock = 50;
            s.seed_price = 7;
        })
        .await,
    );
    let product = stock.product(4).await;
    assert_eq!(
        (&product["price"], &product["stock"]),
        (&json!(28), &json!(50))
    );
    assert_eq!(stock.get("/api/products/5").await.0, 404);
    assert_success(&stock.call("StockTry", "g1", "try", &reserve(2, 5)).await);
    stock.sql("UPDATE products SET price = 1 WHERE id = 1");

    let db = stock.spawned.stop().await.expect("the database");
    let stock = Stock::from(spawn_stock_with(db, |_| {}).await);

    assert_eq!(stock.product(1).await["price"], 1);
    assert_eq!(stock.levels(2).await, (50, 5, 45));
    assert_eq!(stock.get("/api/products/5").await.0, 404);
    assert_success(
        &stock
            .call("StockConfirm", "g1", "confirm", &reserve(2, 5))
            .await,
    );
    assert_eq!(stock.levels(2).await, (45, 0, 45));
}

/// DTM's barrier insert as its Go SDK sends it to Postgres (dtm-labs/dtm `dtmcli/dtmimp`:
/// `insertBarrier` through the Postgres `GetInsertIgnoreTemplate`). Binds: trans_type, gid,
/// branch_id, op, barrier_id, reason.
const DTM_BARRIER_INSERT: &str = "insert into dtm_barrier.barrier(trans_type, gid, branch_id, \
     op, barrier_id, reason) values($1,$2,$3,$4,$5,$6)  on conflict ON CONSTRAINT uniq_barrier do \
     nothing";

#[tokio::test]
async fn dtms_own_barrier_insert_works_on_the_stock_barrier_table_and_skips_duplicates() {
    use diesel::sql_types::Text;
    let stock = Stock::start().await;
    assert_success(&stock.call("StockTry", "g1", "try", &reserve(1, 2)).await);
    let mut conn = stock.db();
    let mut insert = |gid: &str| {
        diesel::sql_query(DTM_BARRIER_INSERT)
            .bind::<Text, _>("tcc")
            .bind::<Text, _>(gid)
            .bind::<Text, _>("01")
            .bind::<Text, _>("try")
            .bind::<Text, _>("01")
            .bind::<Text, _>("try")
            .execute(&mut conn)
            .unwrap_or_else(|e| panic!("DTM's barrier insert fails: {e}"))
    };

    assert_eq!(insert("dtm-g"), 1);
    assert_eq!(insert("dtm-g"), 0, "duplicate");
    assert_eq!(
        insert("g1"),
        0,
        "the stock service's own row is a duplicate for DTM too"
    );
    assert_eq!(stock.barrier_rows(), 2);
}
