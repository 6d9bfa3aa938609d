//! What each scenario accepts ([`app::scenario::Scenario::params`], read as [`app::scenario::FireParams`]), how fault parameters become
//! branch data, and the branch URLs: the pure parts of the fire handlers. What they register
//! with the TM is proven against the real system in `crates/test-support/tests/app.rs`.

use app::configuration::Settings;
use app::routes::fire::TransferRequest;
use app::scenario::{FireParams, Purchase, Scenario, Transfer};
use app::state::Urls;
use serde_json::json;
use service_kit::params::{ParamsError, RawParams};

#[test]
fn every_scenario_takes_its_defaults() {
    let names: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "fireTcc",
            "fireTccRollback",
            "firePurchase",
            "fireTccNested"
        ]
    );
    for scenario in Scenario::ALL {
        let raw = RawParams::default();
        let (wait_result, faults) = match scenario {
            Scenario::FirePurchase => {
                let p: FireParams<Purchase> = raw.parse(&scenario.params()).unwrap();
                assert_eq!((p.business.quantity, p.business.product_id), (1, 1));
                (p.wait_result, p.faults)
            }
            _ => {
                let p: FireParams<Transfer> = raw.parse(&scenario.params()).unwrap();
                assert_eq!((p.business.amount, p.business.from), (30, 1));
                (p.wait_result, p.faults)
            }
        };
        assert!(wait_result, "{}", scenario.name());
        assert_eq!(faults, Default::default());
    }
}

#[test]
fn fault_parameters_travel_in_the_data_of_their_rms_branch() {
    let params: FireParams<Transfer> =
        RawParams::from_query("trans_in_confirm=error:3&trans_out_try=delay:3000")
            .parse(&Scenario::FireTcc.params())
            .unwrap();
    let trans_out = TransferRequest::new(1, 30, params.faults.trans_out.clone());
    let trans_in = TransferRequest::new(1, 30, params.faults.trans_in.clone());
    assert_eq!(
        serde_json::to_value(trans_out).unwrap(),
        json!({"account_id": 1, "amount": 30, "fault": {"try": "delay:3000"}})
    );
    assert_eq!(
        serde_json::to_value(trans_in).unwrap(),
        json!({"account_id": 1, "amount": 30, "fault": {"confirm": "error:3"}})
    );
    let plain = TransferRequest::new(4, 45, params.faults.stock.clone());
    assert_eq!(
        serde_json::to_value(plain).unwrap(),
        json!({"account_id": 4, "amount": 45})
    );
}

#[test]
fn faults_for_an_rm_the_scenario_does_not_call_or_malformed_specs_are_refused() {
    for scenario in [Scenario::FireTcc, Scenario::FireTccNested] {
        for query in [
            "stock_try=failure",
            "trans_in_try=explode",
            "trans_in_try=error:0",
        ] {
            let err = RawParams::from_query(query)
                .parse::<Transfer>(&scenario.params())
                .unwrap_err();
            assert!(
                matches!(err, ParamsError::InvalidParameter { .. }),
                "{query}"
            );
        }
    }
    let purchase: FireParams<Purchase> = RawParams::from_query("stock_try=failure")
        .parse(&Scenario::FirePurchase.params())
        .unwrap();
    assert!(purchase.faults.stock.is_some());
}

#[test]
fn transaction_options_are_optional_seconds_and_wait_result_a_flag() {
    let specs = Scenario::FireTcc.params();
    let params: FireParams<Transfer> = RawParams::from_query("timeout_to_fail=5&wait_result=false")
        .parse(&specs)
        .unwrap();
    assert_eq!(params.timeout_to_fail, Some(5));
    assert_eq!(params.retry_interval, None);
    assert!(!params.wait_result);
    for refused in [
        "wait_result=maybe",
        "request_timeout=0",
        "request_timeout=61",
    ] {
        assert!(
            RawParams::from_query(refused)
                .parse::<Transfer>(&specs)
                .is_err(),
            "{refused}"
        );
    }
}

#[test]
fn branch_urls_follow_the_dtm_tutorial_names() {
    let urls = Urls::from_settings(&Settings {
        trans_out_url: "http://a:1/api/".into(),
        app_url: Some("http://app:8080/api/".into()),
        ..Settings::default()
    });
    assert_eq!(urls.trans_out("TransOutTry"), "http://a:1/api/TransOutTry");
    assert_eq!(
        urls.stock("StockCancel"),
        "http://127.0.0.1:8083/api/StockCancel"
    );
    assert_eq!(
        urls.app("TransInNestedTry"),
        "http://app:8080/api/TransInNestedTry"
    );
}
