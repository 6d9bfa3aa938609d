//! All five binaries wired together, each on its own fresh database, plus the look-ups tests
//! make on them (accounts, products, the coordinator's record of a transaction).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    spawn_app_with, spawn_bank_with, spawn_coordinator, spawn_stock_with, Spawned,
    TEST_SEED_ACCOUNTS, TEST_SEED_PRODUCTS,
};
use crate::db::TestDb;

/// The whole sample running in-process: coordinator (TM), trans-out and trans-in (RMs, banks A and
/// B), stock (RM) and app (AP).
pub struct System {
    /// The TM.
    pub coordinator: Spawned,
    /// Bank A.
    pub trans_out: Spawned,
    /// Bank B.
    pub trans_in: Spawned,
    /// Inventory.
    pub stock: Spawned,
    /// The AP, configured with the four URLs above.
    pub app: Spawned,
    /// A client for the test's own calls.
    pub http: reqwest::Client,
}

/// Starts the five binaries.
pub async fn spawn_system() -> System {
    spawn_system_with(|_| {}, |_| {}).await
}

/// Starts the five binaries, wired as [`super`] describes (shared secret, each RM trusting the
/// system's coordinator), with `configure_stock` applied to the stock service's settings (e.g.
/// a huge `seed_price`) and `configure_app` to the AP's. The AP's settings come filled in with the
/// other four binaries' URLs, so `configure_app` can also point one of them elsewhere (e.g. at
/// [`unreachable_url`]) while the rest of the system stays real.
pub async fn spawn_system_with(
    configure_stock: impl FnOnce(&mut stock::configuration::Settings),
    configure_app: impl FnOnce(&mut app::configuration::Settings),
) -> System {
    spawn_system_configured(|_| {}, configure_stock, configure_app).await
}

/// Starts the five binaries with the benchmark's non-TCC endpoints on (`BASELINE_ENDPOINTS=on`
/// in both banks and the AP; off by default), for the tests of `fireBaseline`.
pub async fn spawn_system_with_baseline() -> System {
    spawn_system_configured(
        |bank| bank.common.baseline_endpoints = true,
        |_| {},
        |app| app.baseline_endpoints = true,
    )
    .await
}

/// [`spawn_system_with`], with `configure_bank` applied to both banks' settings too.
async fn spawn_system_configured(
    configure_bank: impl Fn(&mut bank::configuration::Settings),
    configure_stock: impl FnOnce(&mut stock::configuration::Settings),
    configure_app: impl FnOnce(&mut app::configuration::Settings),
) -> System {
    let coordinator = spawn_coordinator().await;
    // Each RM trusts the system's coordinator: a Try without a gid token passes when it reports
    // the gid prepared with the branch registered.
    let dtm_url = coordinator.dtm_url();
    let configure_bank = |bank: &mut bank::configuration::Settings| {
        bank.common.dtm_url = dtm_url.clone();
        configure_bank(bank)
    };
    let trans_out = spawn_bank_with(
        bank::Role::TransOut,
        TestDb::create(bank::Role::TransOut.database()),
        &configure_bank,
    )
    .await;
    let trans_in = spawn_bank_with(
        bank::Role::TransIn,
        TestDb::create(bank::Role::TransIn.database()),
        &configure_bank,
    )
    .await;
    let stock = spawn_stock_with(TestDb::create("stock"), |stock| {
        stock.common.dtm_url = dtm_url.clone();
        configure_stock(stock)
    })
    .await;
    let mut settings = app::configuration::Settings {
        dtm_url: coordinator.dtm_url(),
        trans_out_url: trans_out.url("/api"),
        trans_in_url: trans_in.url("/api"),
        stock_url: stock.url("/api"),
        branch_signing_secret: Some(super::test_secret()),
        ..app::configuration::Settings::default()
    };
    configure_app(&mut settings);
    let app = spawn_app_with(settings).await;
    System {
        coordinator,
        trans_out,
        trans_in,
        stock,
        app,
        http: reqwest::Client::new(),
    }
}

impl System {
    /// `GET <bank>/api/accounts/{id}` as JSON; panics unless 200.
    pub async fn account(&self, bank: &Spawned, id: i64) -> Value {
        self.get_json(&bank.url(&format!("/api/accounts/{id}")))
            .await
    }

    /// `(balance, trading_balance)` of account `id` in `bank`.
    pub async fn balances(&self, bank: &Spawned, id: i64) -> (i64, i64) {
        let a = self.account(bank, id).await;
        (
            a["balance"].as_i64().expect("balance"),
            a["trading_balance"].as_i64().expect("trading_balance"),
        )
    }

    /// `GET stock/api/products/{id}` as JSON.
    pub async fn product(&self, id: i64) -> Value {
        self.get_json(&self.stock.url(&format!("/api/products/{id}")))
            .await
    }

    /// The coordinator's record: `{"transaction": {...}, "branches": [...]}`.
    pub async fn query(&self, gid: &str) -> Value {
        self.get_json(&format!("{}/query?gid={gid}", self.coordinator.dtm_url()))
            .await
    }

    /// Polls the coordinator until `gid` has `status`, or panics after `within`.
    pub async fn wait_for_status(&self, gid: &str, status: &str, within: Duration) -> Value {
        wait_for_status(&self.http, &self.coordinator.dtm_url(), gid, status, within).await
    }

    /// The coordinator's global transactions, newest first: the first page (up to 100) of
    /// `GET {dtm}/all`. Empty means no global transaction was ever started.
    pub async fn transactions(&self) -> Vec<Value> {
        let page = self
            .get_json(&format!("{}/all", self.coordinator.dtm_url()))
            .await;
        page["transactions"]
            .as_array()
            .expect("`all` lists transactions")
            .clone()
    }

    /// The JSON views of every seeded account of both banks (1..=[`TEST_SEED_ACCOUNTS`]) and
    /// every seeded product (1..=[`TEST_SEED_PRODUCTS`]), `updated_at` included. Two equal
    /// snapshots, taken before and after a request, prove that it changed nothing in any RM: no
    /// balance, frozen funds, pending credit, stock or reservation moved.
    pub async fn rm_snapshot(&self) -> Vec<Value> {
        let mut snapshot = Vec::new();
        for bank in [&self.trans_out, &self.trans_in] {
            for id in 1..=i64::from(TEST_SEED_ACCOUNTS) {
                snapshot.push(self.account(bank, id).await);
            }
        }
        for id in 1..=i64::from(TEST_SEED_PRODUCTS) {
            snapshot.push(self.product(id).await);
        }
        snapshot
    }

    /// `GET <path>` on the AP with a query string; returns (HTTP status, JSON body).
    pub async fn fire(&self, path_and_query: &str) -> (u16, Value) {
        let request = self.http.get(self.app.url(path_and_query));
        answer(request, &format!("the AP's GET {path_and_query}")).await
    }

    async fn get_json(&self, url: &str) -> Value {
        get_json(&self.http, url).await
    }
}

/// Sends `request` and returns (HTTP status, JSON answer); panics, naming `what` (the call, for
/// the test's output), if nothing answers or the answer is not JSON.
pub async fn answer(request: reqwest::RequestBuilder, what: &str) -> (u16, Value) {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what} answered {status} {text:?}: {e}"));
    (status, json)
}

/// `GET url`, asserting 200, as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.expect("GET answers");
    assert_eq!(response.status().as_u16(), 200, "GET {url}");
    response.json().await.expect("a JSON answer")
}

/// A URL on which nothing listens, `http://127.0.0.1:<port><path>`: a port bound on 127.0.0.1
/// and released at once, so a connection is refused, as from a service that is down. (Another
/// process could take the port in between: a small race tests accept.)
pub fn unreachable_url(path: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
        .port();
    format!("http://127.0.0.1:{port}{path}")
}

/// Polls `{dtm_url}/query?gid=` until the transaction has `status`, or panics after `within`
/// with the last record seen.
pub async fn wait_for_status(
    http: &reqwest::Client,
    dtm_url: &str,
    gid: &str,
    status: &str,
    within: Duration,
) -> Value {
    wait_for_record(
        http,
        dtm_url,
        gid,
        within,
        &format!("status {status}"),
        |record| record["transaction"]["status"] == status,
    )
    .await
}

/// Polls `{dtm_url}/query?gid=` until `reached` holds for the record (`{"transaction",
/// "branches"}`), and returns it; panics after `within` with `what` and the last record seen.
pub async fn wait_for_record(
    http: &reqwest::Client,
    dtm_url: &str,
    gid: &str,
    within: Duration,
    what: &str,
    reached: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let record = get_json(http, &format!("{dtm_url}/query?gid={gid}")).await;
        if reached(&record) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "gid {gid} did not reach {what} within {within:?}; last record: {record:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The branch op rows of a query answer with `op`, in the order the coordinator lists them.
pub fn ops<'a>(record: &'a Value, op: &str) -> Vec<&'a Value> {
    record["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .filter(|b| b["op"] == op)
        .collect()
}

/// Whether the query answer has branch ops with `op` (`confirm` or `cancel`) and every one of
/// them has succeeded: a record without any (a transaction that registered no branch, a query
/// that answered something else) is not "all succeeded".
pub fn all_succeeded(record: &Value, op: &str) -> bool {
    let ops = ops(record, op);
    !ops.is_empty() && ops.iter().all(|b| b["status"] == "succeed")
}

/// Which order [`join_in_turns`] gives two requests in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// `a` is answered before `b` is sent.
    AFirst,
    /// `b` is answered before `a` is sent.
    BFirst,
    /// Both at once: whichever reaches the server first wins.
    Race,
}

impl Turn {
    /// The turn of `round`: `AFirst`, `BFirst`, `Race`, in that cycle.
    pub fn of(round: usize) -> Turn {
        match round % 3 {
            0 => Turn::AFirst,
            1 => Turn::BFirst,
            _ => Turn::Race,
        }
    }
}

/// Runs `a` and `b` in the order [`Turn::of`] `round` says, answering `(a, b)`: over a loop of
/// rounds both orders certainly reach the server (a race alone may always go the same way),
/// and so do true races.
pub async fn join_in_turns<A: std::future::Future, B: std::future::Future>(
    round: usize,
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    match Turn::of(round) {
        Turn::AFirst => {
            let a = a.await;
            (a, b.await)
        }
        Turn::BFirst => {
            let b = b.await;
            (a.await, b)
        }
        Turn::Race => tokio::join!(a, b),
    }
}

/// Runs one TCC transfer of 30 from account 1 of bank A to account 1 of bank B through
/// `client` (whichever coordinator it points at) as an AP holding the test secret (its
/// transactions carry gid tokens, so banks that do not trust that coordinator accept the Trys),
/// with `trans_in_faults` (a `fault` object, or `null`) in the TransIn branch's data.
/// `trans_out_api` and `trans_in_api` are the banks' `.../api` bases. Panics unless both Trys
/// succeed; returns the gid.
pub async fn tcc_transfer(
    client: &tcc::client::TccClient,
    trans_out_api: &str,
    trans_in_api: &str,
    options: tcc::client::TransOptions,
    trans_in_faults: Value,
) -> String {
    let client = client.clone().with_gid_tokens(Some(super::test_secret()));
    let gid = client.new_gid().await.expect("a gid");
    let (out, inn) = (trans_out_api.to_owned(), trans_in_api.to_owned());
    let outcome = client
        .tcc_global_transaction(&gid, options, |tcc| async move {
            tcc.call_branch(
                &serde_json::json!({"account_id": 1, "amount": 30}),
                &format!("{out}/TransOutTry"),
                &format!("{out}/TransOutConfirm"),
                &format!("{out}/TransOutCancel"),
            )
            .await?;
            let mut body = serde_json::json!({"account_id": 1, "amount": 30});
            if !trans_in_faults.is_null() {
                body["fault"] = trans_in_faults;
            }
            tcc.call_branch(
                &body,
                &format!("{inn}/TransInTry"),
                &format!("{inn}/TransInConfirm"),
                &format!("{inn}/TransInCancel"),
            )
            .await?;
            Ok::<(), tcc::client::BranchError>(())
        })
        .await
        .expect("the coordinator accepts the transaction");
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    gid
}
