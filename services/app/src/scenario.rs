//! The scenario catalogue (design §8): what each fire endpoint does, as data.
//!
//! A [`Scenario`] is a name (its endpoint is `/api/<name>`), a [`Shape`] that says which
//! parameters it takes and which branches it builds from them, and preset faults carried in
//! branch data. Running one is always the same: check the parameters, build the list of
//! [`BranchPlan`]s, then call each branch in order inside one global transaction
//! ([`crate::routes::fire`]). So a new scenario is a new row of [`CATALOGUE`], and new
//! per-request knobs (fault parameters named after [`Resource::name`], e.g. `trans_in_try`) are a
//! change to how branches are built, not to how they are run.

use serde_json::{json, Map, Value};
use service_kit::fault::{BranchFaults, Fault, FaultAction};
use tcc::protocol::Op;

use crate::configuration::{Settings, DEFAULT_APP_URL};
use crate::error::AppError;
use crate::params::{ParamSpec, Params, MAX_OPTION_SECS, MAX_REQUEST_TIMEOUT_SECS};
use crate::prices::StockPrices;

/// Where a branch can go: one of the RMs, or the AP's own nested branch. Each exposes
/// `POST {base}/{Label}Try|{Label}Confirm|{Label}Cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Bank A (`trans-out`): Try freezes `amount` of `account_id`, Confirm debits it.
    TransOut,
    /// Bank B (`trans-in`): Try records a pending credit, Confirm adds it to the balance.
    TransIn,
    /// The stock service: Try reserves `quantity` of `product_id`, Confirm deducts it.
    Stock,
    /// The AP itself (`APP_URL`), nested TCC: its Try is an AP that adds a TransIn child
    /// branch (`0201` under `02`) to the same global transaction, passing its data through
    /// (see [`crate::routes::nested`]). It has the body and faults of a TransIn branch.
    TransInNested,
}

impl Resource {
    /// Every resource.
    pub const ALL: [Resource; 4] = [
        Resource::TransOut,
        Resource::TransIn,
        Resource::Stock,
        Resource::TransInNested,
    ];

    /// The snake_case name used in logs and as the prefix of per-branch request parameters.
    pub fn name(self) -> &'static str {
        match self {
            Resource::TransOut => "trans_out",
            Resource::TransIn => "trans_in",
            Resource::Stock => "stock",
            Resource::TransInNested => "trans_in_nested",
        }
    }

    /// The RM that finally applies this branch's data: the resource itself, or TransIn for the
    /// nested branch, which passes its data through to a TransIn child. Its fault parameters
    /// (`trans_in_try`, ... for the nested branch) are the ones put into this branch's data.
    pub fn rm(self) -> Resource {
        match self {
            Resource::TransInNested => Resource::TransIn,
            rm => rm,
        }
    }

    /// The endpoint prefix, as in DTM's tutorials: `TransOut`, `TransIn`, `Stock`.
    pub fn label(self) -> &'static str {
        match self {
            Resource::TransOut => "TransOut",
            Resource::TransIn => "TransIn",
            Resource::Stock => "Stock",
            Resource::TransInNested => "TransInNested",
        }
    }

    /// The Try, Confirm and Cancel URLs of this resource's branch.
    pub fn urls(self, endpoints: &Endpoints) -> BranchUrls {
        let base = match self {
            Resource::TransOut => &endpoints.trans_out,
            Resource::TransIn => &endpoints.trans_in,
            Resource::Stock => &endpoints.stock,
            Resource::TransInNested => &endpoints.app,
        };
        let label = self.label();
        BranchUrls {
            try_url: format!("{base}/{label}Try"),
            confirm_url: format!("{base}/{label}Confirm"),
            cancel_url: format!("{base}/{label}Cancel"),
        }
    }
}

/// The API bases of the RMs and of the AP itself (`.../api`, no trailing `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// `TRANS_OUT_URL`.
    pub trans_out: String,
    /// `TRANS_IN_URL`.
    pub trans_in: String,
    /// `STOCK_URL`.
    pub stock: String,
    /// `APP_URL`: the AP's own base, where its nested branch is served.
    pub app: String,
}

impl Endpoints {
    /// The bases named by the settings. `app_url` should have been decided by
    /// [`Settings::resolve_app_url`] (the startup code does it after binding); unset, it is
    /// taken as [`DEFAULT_APP_URL`].
    pub fn from_settings(settings: &Settings) -> Self {
        let base = |url: &str| url.trim_end_matches('/').to_owned();
        Endpoints {
            trans_out: base(&settings.trans_out_url),
            trans_in: base(&settings.trans_in_url),
            stock: base(&settings.stock_url),
            app: base(settings.app_url.as_deref().unwrap_or(DEFAULT_APP_URL)),
        }
    }
}

/// The three URLs one branch registers (Confirm, Cancel) and calls (Try).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchUrls {
    /// Called by the AP.
    pub try_url: String,
    /// Called by the TM after submit.
    pub confirm_url: String,
    /// Called by the TM after abort.
    pub cancel_url: String,
}

/// One branch, ready to call: where it goes and the data its Try, Confirm and Cancel receive.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchPlan {
    /// Which RM.
    pub resource: Resource,
    /// The business fields: `{"account_id", "amount"}` for the banks (amount in minor units),
    /// `{"product_id", "quantity"}` for stock.
    pub body: Map<String, Value>,
    /// Faults the RM injects (design §8); sent as the `fault` member when not empty.
    pub faults: BranchFaults,
}

impl BranchPlan {
    /// A bank branch moving `amount` minor units on `account_id`.
    pub fn account(resource: Resource, account_id: i64, amount: i64) -> Self {
        Self::new(
            resource,
            json!({ "account_id": account_id, "amount": amount }),
        )
    }

    /// A stock branch reserving `quantity` units of `product_id`.
    pub fn stock(product_id: i64, quantity: i64) -> Self {
        Self::new(
            Resource::Stock,
            json!({ "product_id": product_id, "quantity": quantity }),
        )
    }

    fn new(resource: Resource, body: Value) -> Self {
        let Value::Object(body) = body else {
            unreachable!("branch bodies are built as JSON objects")
        };
        BranchPlan {
            resource,
            body,
            faults: BranchFaults::default(),
        }
    }

    /// The branch data: the body, plus `"fault": {...}` when a fault is set. Because the AP
    /// registers exactly this with the TM, Confirm and Cancel carry the same faults as Try.
    pub fn data(&self) -> Value {
        let mut data = self.body.clone();
        if !self.faults.is_empty() {
            data.insert(
                "fault".into(),
                serde_json::to_value(&self.faults).expect("faults serialize"),
            );
        }
        Value::Object(data)
    }
}

/// Which branches a scenario builds, and so which parameters it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// TransOut (debit `from` in bank A), then TransIn (credit `to` in bank B), of `amount`.
    Transfer,
    /// Stock (reserve `quantity` of `product_id`), then TransOut (debit `buyer`), then TransIn
    /// (credit `merchant`) of `price * quantity`, the price read from the stock service.
    Purchase,
    /// Like [`Shape::Transfer`], but the credit goes through the AP's nested branch: TransOut
    /// (branch 01), then [`Resource::TransInNested`] (02), whose Try registers and tries the
    /// TransIn credit as child branch 0201.
    NestedTransfer,
}

/// The parameters of [`Shape::Transfer`].
pub const TRANSFER_PARAMS: &[ParamSpec] = &[
    ParamSpec::positive_int("amount", 30, "minor units to move"),
    ParamSpec::positive_int("from", 1, "account debited in bank A (trans-out)"),
    ParamSpec::positive_int("to", 1, "account credited in bank B (trans-in)"),
];

/// The parameters of [`Shape::Purchase`].
pub const PURCHASE_PARAMS: &[ParamSpec] = &[
    ParamSpec::positive_int("product_id", 1, "product reserved in the stock service"),
    ParamSpec::positive_int("quantity", 1, "units bought"),
    ParamSpec::positive_int("buyer", 1, "account debited in bank A (trans-out)"),
    ParamSpec::positive_int("merchant", 1, "account credited in bank B (trans-in)"),
];

/// The test-only parameter that makes the AP exit after its Trys (an AP crash). Like the fault
/// parameters, it needs `FAULT_INJECTION=on`.
pub const CRASH_AFTER_TRY: &str = "crash_after_try";

/// Parameters every scenario takes: the transaction options of design §2 (seconds) and the
/// test-only AP crash.
pub const COMMON_PARAMS: &[ParamSpec] = &[
    ParamSpec::optional_secs(
        "timeout_to_fail",
        MAX_OPTION_SECS,
        "seconds before the coordinator aborts the transaction if it is still prepared",
    ),
    ParamSpec::optional_secs(
        "retry_interval",
        MAX_OPTION_SECS,
        "seconds: base of the coordinator's exponential backoff between Confirm/Cancel attempts",
    ),
    ParamSpec::optional_secs(
        "request_timeout",
        MAX_REQUEST_TIMEOUT_SECS,
        "seconds: timeout of each branch call, the AP's Try calls included",
    ),
    ParamSpec::boolean(
        "wait_result",
        true,
        "answer once the second phase has finished (the final status), or at once after submit",
    ),
    ParamSpec::boolean(
        CRASH_AFTER_TRY,
        false,
        "test only: the AP process exits after every Try succeeded, before submit (an AP crash)",
    ),
];

/// The fault parameter of each branch and phase, `<resource>_<op>`; its value is a fault spec
/// that travels in the branch's data (see `service_kit::fault`).
pub const FAULT_PARAMS: &[(Resource, Op, ParamSpec)] = &[
    (
        Resource::TransOut,
        Op::Try,
        ParamSpec::fault("trans_out_try", "TransOut's Try"),
    ),
    (
        Resource::TransOut,
        Op::Confirm,
        ParamSpec::fault("trans_out_confirm", "TransOut's Confirm"),
    ),
    (
        Resource::TransOut,
        Op::Cancel,
        ParamSpec::fault("trans_out_cancel", "TransOut's Cancel"),
    ),
    (
        Resource::TransIn,
        Op::Try,
        ParamSpec::fault("trans_in_try", "TransIn's Try"),
    ),
    (
        Resource::TransIn,
        Op::Confirm,
        ParamSpec::fault("trans_in_confirm", "TransIn's Confirm"),
    ),
    (
        Resource::TransIn,
        Op::Cancel,
        ParamSpec::fault("trans_in_cancel", "TransIn's Cancel"),
    ),
    (
        Resource::Stock,
        Op::Try,
        ParamSpec::fault("stock_try", "Stock's Try"),
    ),
    (
        Resource::Stock,
        Op::Confirm,
        ParamSpec::fault("stock_confirm", "Stock's Confirm"),
    ),
    (
        Resource::Stock,
        Op::Cancel,
        ParamSpec::fault("stock_cancel", "Stock's Cancel"),
    ),
];

impl Shape {
    /// The parameters that shape the branches (amounts, accounts, products).
    pub fn business_params(self) -> &'static [ParamSpec] {
        match self {
            Shape::Transfer | Shape::NestedTransfer => TRANSFER_PARAMS,
            Shape::Purchase => PURCHASE_PARAMS,
        }
    }

    /// Where this shape's branches go, in call order.
    pub fn resources(self) -> &'static [Resource] {
        match self {
            Shape::Transfer => &[Resource::TransOut, Resource::TransIn],
            Shape::Purchase => &[Resource::Stock, Resource::TransOut, Resource::TransIn],
            Shape::NestedTransfer => &[Resource::TransOut, Resource::TransInNested],
        }
    }

    /// Every parameter a scenario of this shape accepts: its business parameters, the common
    /// ones, and a fault parameter per phase of the RM of each of its branches (a fault for an
    /// RM the scenario does not call is refused as unknown).
    pub fn params(self) -> Vec<ParamSpec> {
        let faults = FAULT_PARAMS
            .iter()
            .filter(|(rm, _, _)| self.resources().iter().any(|r| r.rm() == *rm))
            .map(|(_, _, spec)| *spec);
        self.business_params()
            .iter()
            .chain(COMMON_PARAMS)
            .copied()
            .chain(faults)
            .collect()
    }
}

/// One entry of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The endpoint name, as in DTM's examples: `fireTcc` answers on `/api/fireTcc`.
    pub name: &'static str,
    /// What it shows, one line.
    pub summary: &'static str,
    /// Its branches and parameters.
    pub shape: Shape,
    /// Faults every request of this scenario injects into the branches of a resource.
    pub preset_faults: &'static [(Resource, BranchFaults)],
}

const REFUSE_TRY: BranchFaults = BranchFaults {
    try_: Some(Fault {
        delay_ms: 0,
        action: FaultAction::Failure,
    }),
    confirm: None,
    cancel: None,
};

/// Every scenario the AP serves (design §8).
pub static CATALOGUE: &[Scenario] = &[
    Scenario {
        name: "fireTcc",
        summary: "success: Try, Try, submit, Confirm, Confirm",
        shape: Shape::Transfer,
        preset_faults: &[],
    },
    Scenario {
        name: "fireTccRollback",
        summary: "rollback: TransIn's Try is refused, so both branches are cancelled",
        shape: Shape::Transfer,
        preset_faults: &[(Resource::TransIn, REFUSE_TRY)],
    },
    Scenario {
        name: "firePurchase",
        summary: "inventory and payment in one global transaction",
        shape: Shape::Purchase,
        preset_faults: &[],
    },
    Scenario {
        name: "fireTccNested",
        summary: "nested TCC: TransIn is called by a parent branch, as child branch 0201",
        shape: Shape::NestedTransfer,
        preset_faults: &[],
    },
];

impl Scenario {
    /// The HTTP path: `/api/<name>`.
    pub fn path(&self) -> String {
        format!("/api/{}", self.name)
    }

    /// The parameters it accepts.
    pub fn params(&self) -> Vec<ParamSpec> {
        self.shape.params()
    }

    /// The branches to call, in order, for checked `params`. A purchase first asks the stock
    /// service for the price, so this is where [`AppError::UnknownProduct`],
    /// [`AppError::AmountOverflow`] and [`AppError::StockUnavailable`] come from: all before any
    /// global transaction exists.
    pub async fn plan(
        &self,
        params: &Params,
        prices: &StockPrices,
    ) -> Result<Vec<BranchPlan>, AppError> {
        let price = match self.shape {
            Shape::Transfer | Shape::NestedTransfer => None,
            Shape::Purchase => Some(prices.price(params.int("product_id")).await?),
        };
        self.branches(params, price)
    }

    /// The pure part of [`Scenario::plan`]: `price` (minor units) is the product's for a
    /// purchase, unused otherwise.
    pub fn branches(
        &self,
        params: &Params,
        price: Option<i64>,
    ) -> Result<Vec<BranchPlan>, AppError> {
        let mut branches = match self.shape {
            Shape::Transfer => {
                let amount = params.int("amount");
                vec![
                    BranchPlan::account(Resource::TransOut, params.int("from"), amount),
                    BranchPlan::account(Resource::TransIn, params.int("to"), amount),
                ]
            }
            Shape::NestedTransfer => {
                let amount = params.int("amount");
                vec![
                    BranchPlan::account(Resource::TransOut, params.int("from"), amount),
                    BranchPlan::account(Resource::TransInNested, params.int("to"), amount),
                ]
            }
            Shape::Purchase => {
                let price = price.expect("a purchase is planned with its price");
                let quantity = params.int("quantity");
                let amount = price
                    .checked_mul(quantity)
                    .ok_or(AppError::AmountOverflow { price, quantity })?;
                vec![
                    BranchPlan::stock(params.int("product_id"), quantity),
                    BranchPlan::account(Resource::TransOut, params.int("buyer"), amount),
                    BranchPlan::account(Resource::TransIn, params.int("merchant"), amount),
                ]
            }
        };
        for branch in &mut branches {
            if let Some((_, faults)) = self
                .preset_faults
                .iter()
                .find(|(resource, _)| *resource == branch.resource)
            {
                branch.faults = faults.clone();
            }
            // A fault given as a parameter replaces the scenario's preset for that phase. The
            // nested branch takes TransIn's: it passes them on to its TransIn child.
            for (rm, op, spec) in FAULT_PARAMS {
                let Some(fault) = params.fault(spec.name) else {
                    continue;
                };
                if *rm != branch.resource.rm() {
                    continue;
                }
                match op {
                    Op::Try => branch.faults.try_ = Some(fault),
                    Op::Confirm => branch.faults.confirm = Some(fault),
                    Op::Cancel => branch.faults.cancel = Some(fault),
                }
            }
        }
        Ok(branches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::RawParams;

    fn scenario(name: &str) -> &'static Scenario {
        CATALOGUE.iter().find(|s| s.name == name).unwrap()
    }

    fn plan(name: &str, query: &str, price: Option<i64>) -> Result<Vec<BranchPlan>, AppError> {
        let s = scenario(name);
        let params = RawParams::from_query(query).parse(&s.params()).unwrap();
        s.branches(&params, price)
    }

    #[test]
    fn every_scenario_plans_with_its_default_parameters() {
        for s in CATALOGUE {
            let params = RawParams::default().parse(&s.params()).unwrap();
            assert!(
                !s.branches(&params, Some(100)).unwrap().is_empty(),
                "{}",
                s.name
            );
        }
        let names: Vec<_> = CATALOGUE.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "fireTcc",
                "fireTccRollback",
                "firePurchase",
                "fireTccNested"
            ]
        );
    }

    #[test]
    fn fire_tcc_debits_from_in_bank_a_and_credits_to_in_bank_b() {
        let branches = plan("fireTcc", "amount=45&from=3&to=4", None).unwrap();
        let data: Vec<_> = branches.iter().map(|b| (b.resource, b.data())).collect();
        assert_eq!(
            data,
            [
                (Resource::TransOut, json!({"account_id": 3, "amount": 45})),
                (Resource::TransIn, json!({"account_id": 4, "amount": 45})),
            ]
        );
    }

    #[test]
    fn fire_tcc_rollback_refuses_only_trans_in_try() {
        let branches = plan("fireTccRollback", "", None).unwrap();
        assert_eq!(branches[0].data(), json!({"account_id": 1, "amount": 30}));
        assert_eq!(
            branches[1].data(),
            json!({"account_id": 1, "amount": 30, "fault": {"try": "failure"}})
        );
    }

    #[test]
    fn fault_parameters_travel_in_the_data_of_their_branch() {
        let branches = plan(
            "fireTcc",
            "trans_in_confirm=error:3&trans_out_try=delay:3000",
            None,
        )
        .unwrap();
        assert_eq!(
            branches[0].data(),
            json!({"account_id": 1, "amount": 30, "fault": {"try": "delay:3000"}})
        );
        assert_eq!(
            branches[1].data(),
            json!({"account_id": 1, "amount": 30, "fault": {"confirm": "error:3"}})
        );
    }

    #[test]
    fn a_fault_parameter_replaces_the_scenario_preset_for_its_phase_only() {
        let branches = plan("fireTccRollback", "trans_in_cancel=ongoing", None).unwrap();
        assert_eq!(
            branches[1].data()["fault"],
            json!({"try": "failure", "cancel": "ongoing"})
        );
        let branches = plan("fireTccRollback", "trans_in_try=delay:10", None).unwrap();
        assert_eq!(branches[1].data()["fault"], json!({"try": "delay:10"}));
    }

    #[test]
    fn faults_for_an_rm_the_scenario_does_not_call_or_malformed_specs_are_refused() {
        let s = scenario("fireTcc");
        for query in [
            "stock_try=failure",
            "trans_in_try=explode",
            "trans_in_try=error:0",
        ] {
            let err = RawParams::from_query(query).parse(&s.params()).unwrap_err();
            assert_eq!(err.code(), "invalid_parameter", "{query}");
        }
        let purchase = scenario("firePurchase");
        assert!(RawParams::from_query("stock_try=failure")
            .parse(&purchase.params())
            .is_ok());
    }

    #[test]
    fn transaction_options_are_optional_seconds_and_wait_result_a_flag() {
        let s = scenario("fireTcc");
        let params = RawParams::from_query("timeout_to_fail=5&wait_result=false")
            .parse(&s.params())
            .unwrap();
        assert_eq!(params.optional_int("timeout_to_fail"), Some(5));
        assert_eq!(params.optional_int("retry_interval"), None);
        assert!(!params.flag("wait_result"));
        assert!(RawParams::from_query("wait_result=maybe")
            .parse(&s.params())
            .is_err());
        assert!(RawParams::from_query("request_timeout=0")
            .parse(&s.params())
            .is_err());
    }

    #[test]
    fn fire_tcc_nested_credits_through_the_aps_nested_branch_with_trans_in_faults() {
        let branches = plan(
            "fireTccNested",
            "amount=45&from=3&to=4&trans_in_try=failure&trans_out_confirm=error:1",
            None,
        )
        .unwrap();
        let data: Vec<_> = branches.iter().map(|b| (b.resource, b.data())).collect();
        assert_eq!(
            data,
            [
                (
                    Resource::TransOut,
                    json!({"account_id": 3, "amount": 45, "fault": {"confirm": "error:1"}})
                ),
                (
                    Resource::TransInNested,
                    json!({"account_id": 4, "amount": 45, "fault": {"try": "failure"}})
                ),
            ]
        );
        let s = scenario("fireTccNested");
        assert!(RawParams::from_query("stock_try=failure")
            .parse(&s.params())
            .is_err());
        let endpoints = Endpoints::from_settings(&Settings {
            app_url: Some("http://app:8080/api/".into()),
            ..Settings::default()
        });
        let urls = Resource::TransInNested.urls(&endpoints);
        assert_eq!(urls.try_url, "http://app:8080/api/TransInNestedTry");
        assert_eq!(urls.confirm_url, "http://app:8080/api/TransInNestedConfirm");
        assert_eq!(urls.cancel_url, "http://app:8080/api/TransInNestedCancel");
    }

    #[test]
    fn a_purchase_reserves_stock_then_moves_price_times_quantity() {
        let branches = plan(
            "firePurchase",
            "product_id=7&quantity=3&buyer=5&merchant=6",
            Some(700),
        )
        .unwrap();
        let data: Vec<_> = branches.iter().map(|b| (b.resource, b.data())).collect();
        assert_eq!(
            data,
            [
                (Resource::Stock, json!({"product_id": 7, "quantity": 3})),
                (Resource::TransOut, json!({"account_id": 5, "amount": 2100})),
                (Resource::TransIn, json!({"account_id": 6, "amount": 2100})),
            ]
        );
    }

    #[test]
    fn a_purchase_amount_that_overflows_is_refused() {
        let err = plan("firePurchase", "quantity=3", Some(i64::MAX / 2)).unwrap_err();
        assert!(matches!(err, AppError::AmountOverflow { quantity: 3, .. }));
    }

    #[test]
    fn branch_urls_follow_the_dtm_tutorial_names() {
        let endpoints = Endpoints::from_settings(&Settings {
            trans_out_url: "http://a:1/api/".into(),
            ..Settings::default()
        });
        let urls = Resource::TransOut.urls(&endpoints);
        assert_eq!(urls.try_url, "http://a:1/api/TransOutTry");
        assert_eq!(urls.confirm_url, "http://a:1/api/TransOutConfirm");
        assert_eq!(urls.cancel_url, "http://a:1/api/TransOutCancel");
        assert_eq!(
            Resource::Stock.urls(&endpoints).cancel_url,
            "http://127.0.0.1:8083/api/StockCancel"
        );
    }
}
