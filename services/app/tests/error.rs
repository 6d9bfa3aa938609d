//! How [`app::error::AppError`] answers: statuses, codes, and 5xx messages without upstream
//! detail.

use actix_web::body::to_bytes;
use actix_web::http::StatusCode;
use actix_web::ResponseError;
use app::error::AppError;
use serde_json::Value;
use tcc::client::TccError;

async fn body(error: &AppError) -> Value {
    let bytes = to_bytes(error.error_response().into_body()).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[actix_web::test]
async fn an_unreachable_coordinator_is_503_and_a_refusal_502() {
    let down = AppError::Coordinator {
        gid: None,
        source: TccError::Transport {
            call: "newGid",
            message: "connection refused".into(),
        },
    };
    assert_eq!(down.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    let answer = body(&down).await;
    assert_eq!(answer["error"], "coordinator_unavailable");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("no global transaction was started"),
        "{answer}"
    );

    let refused = AppError::Coordinator {
        gid: Some("g1".into()),
        source: TccError::Refused {
            call: "submit",
            status: 409,
            message: "aborting".into(),
        },
    };
    assert_eq!(refused.status_code(), StatusCode::BAD_GATEWAY);
    let answer = body(&refused).await;
    assert_eq!(answer["gid"], "g1");
    assert!(answer["message"]
        .as_str()
        .unwrap()
        .contains("query it by gid"));
}

#[actix_web::test]
async fn stock_failures_do_not_leak_upstream_detail() {
    let e = AppError::StockUnavailable {
        product_id: 3,
        detail: "error sending request for url (http://10.0.0.7:8083/api/products/3)".into(),
    };
    let answer = body(&e).await;
    assert_eq!(answer["error"], "stock_unavailable");
    assert!(!answer.to_string().contains("10.0.0.7"), "{answer}");
}
