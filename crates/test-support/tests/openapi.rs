//! `GET /api/openapi.json` and Swagger UI (`/api/docs/`) on each of the five binaries:
//! the description is valid OpenAPI 3 JSON, names every route the binary registers (read from
//! the same tables the routes come from: the AP's catalogue, each RM's branch endpoints, the
//! DTM API), every operation documents its error answers with the shared error schema, and
//! Swagger UI is served from the vendored files. The fuzz run (`scripts/fuzz_api.sh`) then uses
//! these descriptions against the running system.

use serde_json::Value;
use test_support::spawn::{spawn_system, Spawned};

/// The description `binary` serves, after checking its envelope.
async fn description(http: &reqwest::Client, binary: &Spawned) -> Value {
    let response = http
        .get(binary.url("/api/openapi.json"))
        .send()
        .await
        .expect("GET /api/openapi.json");
    assert_eq!(response.status(), 200, "{}", binary.name);
    let api: Value = response.json().await.expect("the description is JSON");
    assert!(
        api["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}: {}",
        binary.name,
        api["openapi"]
    );
    assert_eq!(api["info"]["title"], binary.name);
    api
}

/// `(METHOD, path)` of every operation in `api`.
fn operations(api: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in api["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                found.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

fn assert_has(api: &Value, binary: &str, expected: &[(&str, &str)]) {
    let ops = operations(api);
    for (method, path) in expected {
        assert!(
            ops.iter().any(|(m, p)| m == method && p == path),
            "{binary}: {method} {path} is not described; described: {ops:?}"
        );
    }
}

/// Every `$ref` in `api` points at a schema that exists.
fn assert_refs_resolve(api: &Value, binary: &str) {
    fn walk(value: &Value, refs: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    refs.push(r.clone());
                }
                map.values().for_each(|v| walk(v, refs));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    walk(api, &mut refs);
    assert!(!refs.is_empty(), "{binary}: no schema references at all");
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{binary}: unexpected $ref {r}"));
        assert!(
            api["components"]["schemas"].get(name).is_some(),
            "{binary}: $ref {r} does not resolve"
        );
    }
}

/// Every operation that takes input documents a 400 answer with the shared error body.
fn assert_400s_documented(api: &Value, binary: &str) {
    for (path, item) in api["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let takes_input = op
                .get("parameters")
                .is_some_and(|p| p != &Value::Array(vec![]))
                || op.get("requestBody").is_some();
            if !takes_input {
                continue;
            }
            let schema = &op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                schema, "#/components/schemas/ErrorBody",
                "{binary}: {method} {path} does not document its 400 answer"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_describes_every_route_it_serves() {
    let system = spawn_system().await;
    let http = &system.http;
    let common = [
        ("GET", "/api/ping"),
        ("GET", "/api/health"),
        ("GET", "/api/metrics"),
    ];

    let api = description(http, &system.coordinator).await;
    assert_has(&api, "coordinator", &common);
    assert_has(
        &api,
        "coordinator",
        &[
            ("GET", "/api/dtmsvr/newGid"),
            ("POST", "/api/dtmsvr/prepare"),
            ("POST", "/api/dtmsvr/registerBranch"),
            ("POST", "/api/dtmsvr/registerTccBranch"),
            ("POST", "/api/dtmsvr/reportTry"),
            ("POST", "/api/dtmsvr/submit"),
            ("POST", "/api/dtmsvr/abort"),
            ("GET", "/api/dtmsvr/query"),
            ("GET", "/api/dtmsvr/all"),
            ("GET", "/api/admin/transactions"),
            ("GET", "/api/admin/transactions/{gid}"),
            ("GET", "/api/admin/transactions/{gid}/diagram"),
            ("GET", "/api/admin/transactions/{gid}/events"),
            ("POST", "/api/admin/transactions/{gid}/retry-now"),
            ("POST", "/api/admin/transactions/{gid}/force-stop"),
        ],
    );
    assert_refs_resolve(&api, "coordinator");
    assert_400s_documented(&api, "coordinator");

    for (binary, branch, view) in [
        (&system.trans_out, "TransOut", "/api/accounts/{id}"),
        (&system.trans_in, "TransIn", "/api/accounts/{id}"),
        (&system.stock, "Stock", "/api/products/{id}"),
    ] {
        let api = description(http, binary).await;
        assert_has(&api, binary.name, &common);
        let paths: Vec<String> = ["Try", "Confirm", "Cancel"]
            .iter()
            .map(|op| format!("/api/{branch}{op}"))
            .collect();
        let mut expected: Vec<(&str, &str)> = paths.iter().map(|p| ("POST", p.as_str())).collect();
        expected.push(("GET", view));
        expected.push(("GET", "/api/branches/{gid}"));
        expected.push(("GET", "/api/paused"));
        expected.push(("POST", "/api/paused/resume"));
        assert_has(&api, binary.name, &expected);
        // Every branch call may be refused for who sent it: Confirm and Cancel for their
        // signature or gid token (401), Try for its gid token (401) or by the Try gate (403).
        let responses =
            |op: &str| api["paths"][format!("/api/{branch}{op}")]["post"]["responses"].clone();
        assert!(responses("Confirm").get("401").is_some(), "{}", binary.name);
        assert!(responses("Try").get("401").is_some(), "{}", binary.name);
        assert!(responses("Try").get("403").is_some(), "{}", binary.name);
        assert!(responses("Confirm").get("403").is_none(), "{}", binary.name);
        // The RMs are not rate-limited by client address (the AP's fire endpoints are).
        assert!(responses("Try").get("429").is_none(), "{}", binary.name);
        assert_refs_resolve(&api, binary.name);
        assert_400s_documented(&api, binary.name);
    }

    let api = description(http, &system.app).await;
    assert_has(&api, "app", &common);
    for scenario in app::scenario::Scenario::ALL {
        let path = scenario.path();
        assert_has(
            &api,
            "app",
            &[("GET", path.as_str()), ("POST", path.as_str())],
        );
        let described: Vec<&str> = api["paths"][&path]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        // The description and the parser come from one table, so compare them by behaviour:
        // the running AP takes every described parameter (a bad value is refused as a bad
        // value, never as an unknown parameter) and refuses an undescribed one as unknown.
        for name in described.iter().copied().chain(["not_a_parameter"]) {
            let (status, body) = system.fire(&format!("{path}?{name}=%20bad%20")).await;
            let unknown = status == 400
                && body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("unknown parameter"));
            assert_eq!(
                unknown,
                name == "not_a_parameter",
                "{path}?{name}=...: {status} {body}"
            );
        }
        // The fire endpoints are rate-limited per client address.
        for method in ["get", "post"] {
            let refusal = &api["paths"][&path][method]["responses"]["429"];
            assert!(refusal.is_object(), "{method} {path}: no 429 documented");
        }
    }
    assert_has(
        &api,
        "app",
        &[
            ("POST", "/api/TransInNestedTry"),
            ("POST", "/api/TransInNestedConfirm"),
            ("POST", "/api/TransInNestedCancel"),
        ],
    );
    assert_refs_resolve(&api, "app");
    assert_400s_documented(&api, "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_is_served_from_the_vendored_files() {
    let system = spawn_system().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for binary in [
        &system.coordinator,
        &system.trans_out,
        &system.stock,
        &system.app,
    ] {
        let redirect = no_redirects
            .get(binary.url("/api/docs"))
            .send()
            .await
            .unwrap();
        assert!(redirect.status().is_redirection(), "{}", binary.name);
        assert_eq!(
            redirect.headers()["location"],
            "/api/docs/",
            "{}",
            binary.name
        );

        let page = system
            .http
            .get(binary.url("/api/docs/"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{}", binary.name);
        let html = page.text().await.unwrap();
        assert!(html.contains("swagger-ui"), "{}: {html}", binary.name);

        let init = system
            .http
            .get(binary.url("/api/docs/swagger-initializer.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(init.status(), 200, "{}", binary.name);
        let script = init.text().await.unwrap();
        assert!(
            script.contains("/api/openapi.json"),
            "{}: {script}",
            binary.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nested_try_refuses_a_coordinator_other_than_its_own() {
    let system = spawn_system().await;
    let response = system
        .http
        .post(system.app.url(
            "/api/TransInNestedTry?gid=g1&trans_type=tcc&branch_id=01&op=try\
             &dtm=http%3A%2F%2F10.0.0.1%3A36789%2Fapi%2Fdtmsvr",
        ))
        .json(&serde_json::json!({ "account_id": 1, "amount": 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_branch_query", "{body}");

    // Its own coordinator and the gid's token, but no such global transaction: the child cannot
    // be registered, so the Try is refused (FAILURE), not a server error.
    let dtm = system.coordinator.dtm_url();
    let response = system
        .http
        .post(system.app.url("/api/TransInNestedTry"))
        .header(
            tcc::signing::GID_TOKEN_HEADER,
            test_support::spawn::test_gid_token("no-such-gid"),
        )
        .query(&[
            ("gid", "no-such-gid"),
            ("trans_type", "tcc"),
            ("branch_id", "01"),
            ("op", "try"),
            ("dtm", dtm.as_str()),
        ])
        .json(&serde_json::json!({ "account_id": 1, "amount": 5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["dtm_result"], "FAILURE", "{body}");

    let response = system
        .http
        .post(
            system
                .app
                .url("/api/TransInNestedTry?gid=g1&trans_type=tcc&branch_id=01&op=try"),
        )
        .json(&serde_json::json!({ "account_id": 1, "amount": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn with_fault_injection_off_the_ap_does_not_describe_the_parameters_it_refuses() {
    let app = test_support::spawn::spawn_app_with(app::configuration::Settings {
        fault_injection: false,
        ..app::configuration::Settings::default()
    })
    .await;
    let api = description(&reqwest::Client::new(), &app).await;
    let described: Vec<&str> = api["paths"]["/api/fireTcc"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(described.contains(&"amount"), "{described:?}");
    assert!(described.contains(&"wait_result"), "{described:?}");
    for refused in ["trans_out_try", "trans_in_confirm", "crash_after_try"] {
        assert!(
            !described.contains(&refused),
            "{refused} is described: {described:?}"
        );
    }
}
