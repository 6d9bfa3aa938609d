//! An RM under test (a bank or the stock service): the branch calls, views and database reads
//! that the bank and stock tests share. Each test file adds its RM's own views on top (accounts
//! and holds, products and reservations).

use diesel::query_dsl::LoadQuery;
use diesel::{PgConnection, QueryDsl, RunQueryDsl};
use serde_json::Value;

use crate::spawn::{answer, test_gid_token, Spawned};

/// A running RM and a client for the test's calls on it.
pub struct Rm {
    /// The RM (its URL, its database).
    pub spawned: Spawned,
    /// The client every call uses; tests clone it for calls of their own.
    pub http: reqwest::Client,
}

impl From<Spawned> for Rm {
    fn from(spawned: Spawned) -> Rm {
        Rm {
            spawned,
            http: reqwest::Client::new(),
        }
    }
}

impl Rm {
    /// `POST /api/{endpoint}?gid={gid}&trans_type=tcc&branch_id=01&op={op}` with `body` as JSON,
    /// as the TM (or the AP, for a Try) calls a branch: with the gid's token
    /// ([`crate::spawn::test_gid_token`]), as an AP holding the test secret sends it with its Trys
    /// and a DTM-compatible TM forwards it with Confirm and Cancel. Returns (HTTP status, JSON
    /// answer).
    pub async fn call(&self, endpoint: &str, gid: &str, op: &str, body: &Value) -> (u16, Value) {
        let query = format!("gid={gid}&trans_type=tcc&branch_id=01&op={op}");
        self.raw(endpoint, &query, "application/json", body.to_string())
            .await
    }

    /// `POST /api/{endpoint}?{query}` with any body and content type (malformed requests), with
    /// the token of the query's first `gid` as written (none when the query has none). Panics
    /// unless the answer is JSON.
    pub async fn raw(
        &self,
        endpoint: &str,
        query: &str,
        content_type: &str,
        body: String,
    ) -> (u16, Value) {
        let token = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("gid="))
            .map(test_gid_token);
        self.raw_with_token(endpoint, query, content_type, body, token.as_deref())
            .await
    }

    /// [`Rm::raw`] with `token` as the `X-Tcc-Gid-Token` header, or without that header for
    /// `None`: a caller without the secret (a DTM client's Try, an attacker's).
    pub async fn raw_with_token(
        &self,
        endpoint: &str,
        query: &str,
        content_type: &str,
        body: String,
        token: Option<&str>,
    ) -> (u16, Value) {
        let path = format!("/api/{endpoint}?{query}");
        let mut request = self
            .http
            .post(self.spawned.url(&path))
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.header(tcc::signing::GID_TOKEN_HEADER, token);
        }
        answer(request, &format!("{} POST {path}", self.spawned.name)).await
    }

    /// `GET {path}`: (HTTP status, JSON answer).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let request = self.http.get(self.spawned.url(path));
        answer(request, &format!("{} GET {path}", self.spawned.name)).await
    }

    /// `GET {path}`, asserting 200 (a view of a row that exists).
    pub async fn view(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// A new connection to the RM's database, for assertions and set-ups.
    pub fn db(&self) -> PgConnection {
        self.spawned.db.as_ref().expect("a database").connect()
    }

    /// The rows `query` loads from the RM's database.
    pub fn load<Q, T>(&self, query: Q) -> Vec<T>
    where
        Q: RunQueryDsl<PgConnection> + LoadQuery<'static, PgConnection, T>,
    {
        query.load(&mut self.db()).expect("loading rows")
    }

    /// How many rows the sub-transaction barrier holds (a refused Try rolls its row back).
    pub fn barrier_rows(&self) -> i64 {
        use tcc::barrier::schema::barrier::dsl::*;
        barrier.count().get_result(&mut self.db()).expect("barrier")
    }

    /// Runs one SQL statement on the RM's database (a test's set-up: lock an account, ...).
    pub fn sql(&self, statement: &str) {
        diesel::sql_query(statement)
            .execute(&mut self.db())
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

/// Asserts a `200 {"dtm_result":"SUCCESS"}` answer.
pub fn assert_success((status, body): &(u16, Value)) {
    assert_eq!(*status, 200, "{body}");
    assert_eq!(body["dtm_result"], "SUCCESS", "{body}");
}

/// Asserts a `409 {"dtm_result":"FAILURE"}` answer (a business refusal) whose message contains
/// `message`.
pub fn assert_failure((status, body): &(u16, Value), message: &str) {
    assert_eq!(*status, 409, "{body}");
    assert_eq!(body["dtm_result"], "FAILURE", "{body}");
    let text = body["message"].as_str().unwrap_or_default();
    assert!(text.contains(message), "expected {message:?} in {body}");
}

/// Asserts the JSON error body `{"error": code, "message": "..."}` with `expected_status`.
pub fn assert_error((status, body): &(u16, Value), expected_status: u16, code: &str) {
    assert_eq!(*status, expected_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}
