//! The AP's scenarios by name, the parameters each accepts (a table checked by
//! [`service_kit::params`]) and the typed [`FireParams`] they are read into: what the routes,
//! the metrics and the OpenAPI description share. What a scenario *does* is its handler in
//! [`crate::routes::fire`]; see `docs/ARCHITECTURE.md#scenarios`.

use serde::Deserialize;
use service_kit::fault::BranchFaults;
use service_kit::params::Kind::{Fault, Flag, Label, Positive, Secs, TestFlag};
use service_kit::params::{Param, ParamTable};
use tcc::client::TransOptions;
use tcc::protocol::{Op, MAX_OPTION_SECS, MAX_REQUEST_TIMEOUT_SECS};

/// One fire endpoint, `GET|POST /api/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// `fireTcc`: TransOut then TransIn, both confirmed.
    FireTcc,
    /// `fireTccRollback`: as `fireTcc`, but TransIn's Try is refused, so both are cancelled.
    FireTccRollback,
    /// `firePurchase`: Stock, TransOut and TransIn in one global transaction.
    FirePurchase,
    /// `fireTccNested`: TransOut, then the AP's own nested branch, whose Try adds TransIn as
    /// child branch `0201`.
    FireTccNested,
}

impl Scenario {
    /// Every scenario, in the order they are described.
    pub const ALL: [Scenario; 4] = [
        Scenario::FireTcc,
        Scenario::FireTccRollback,
        Scenario::FirePurchase,
        Scenario::FireTccNested,
    ];

    /// The endpoint name, as in DTM's examples: `fireTcc` answers on `/api/fireTcc`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::FireTcc => "fireTcc",
            Scenario::FireTccRollback => "fireTccRollback",
            Scenario::FirePurchase => "firePurchase",
            Scenario::FireTccNested => "fireTccNested",
        }
    }

    /// The HTTP path: `/api/<name>`.
    pub fn path(self) -> String {
        format!("/api/{}", self.name())
    }

    /// What it shows, one line.
    pub fn summary(self) -> &'static str {
        match self {
            Scenario::FireTcc => "success: Try, Try, submit, Confirm, Confirm",
            Scenario::FireTccRollback => {
                "rollback: TransIn's Try is refused, so both branches are cancelled"
            }
            Scenario::FirePurchase => "inventory and payment in one global transaction",
            Scenario::FireTccNested => {
                "nested TCC: TransIn is called by a parent branch, as child branch 0201"
            }
        }
    }

    /// Every parameter it accepts: its own, the common ones, and the fault parameters of each
    /// RM it calls (a fault for an RM it does not call is refused as unknown).
    pub fn params(self) -> Vec<Param> {
        let (own, stock_faults) = match self {
            Scenario::FirePurchase => (PURCHASE_PARAMS, STOCK_FAULTS),
            _ => (TRANSFER_PARAMS, &[][..]),
        };
        [
            own,
            COMMON_PARAMS,
            TRANS_OUT_FAULTS,
            TRANS_IN_FAULTS,
            stock_faults,
        ]
        .concat()
    }

    /// Its [`ParamTable`], with the body limit and fault injection of the AP's settings.
    pub fn table(self, json_limit: usize, fault_injection: bool) -> ParamTable {
        let params = self.params();
        ParamTable {
            params,
            json_limit,
            fault_injection,
        }
    }
}

/// The own parameters of a transfer ([`Transfer`]).
#[rustfmt::skip]
pub const TRANSFER_PARAMS: &[Param] = &[
    Param { name: "amount", kind: Positive(30), doc: "minor units to move" },
    Param { name: "from", kind: Positive(1), doc: "account debited in bank A (trans-out)" },
    Param { name: "to", kind: Positive(1), doc: "account credited in bank B (trans-in)" },
];

/// The own parameters of `firePurchase` ([`Purchase`]).
#[rustfmt::skip]
pub const PURCHASE_PARAMS: &[Param] = &[
    Param { name: "product_id", kind: Positive(1), doc: "product reserved in the stock service" },
    Param { name: "quantity", kind: Positive(1), doc: "units bought" },
    Param { name: "buyer", kind: Positive(1), doc: "account debited in bank A (trans-out)" },
    Param { name: "merchant", kind: Positive(1), doc: "account credited in bank B (trans-in)" },
];

/// Parameters every scenario takes: the global transaction's options (seconds, see
/// `docs/PROTOCOL.md`) and the test-only AP crash (which, like the fault parameters, needs
/// `FAULT_INJECTION=on`).
#[rustfmt::skip]
pub const COMMON_PARAMS: &[Param] = &[
    Param { name: "timeout_to_fail", kind: Secs(MAX_OPTION_SECS),
        doc: "seconds before the coordinator aborts the transaction if it is still prepared" },
    Param { name: "retry_interval", kind: Secs(MAX_OPTION_SECS),
        doc: "seconds: base of the coordinator's exponential backoff between Confirm/Cancel attempts" },
    Param { name: "request_timeout", kind: Secs(MAX_REQUEST_TIMEOUT_SECS),
        doc: "seconds: timeout of each branch call, the AP's Try calls included" },
    Param { name: "wait_result", kind: Flag(true),
        doc: "answer once the second phase has finished (the final status), or at once after submit" },
    Param { name: "crash_after_try", kind: TestFlag,
        doc: "test only: the AP process exits after every Try succeeded, before submit (an AP crash)" },
    Param { name: "gid_prefix", kind: Label,
        doc: "put in front of the gid (`<prefix>-<newGid>`), so a participant finds their own transactions" },
];

/// The fault parameters of bank A, `trans_out_try|confirm|cancel`: each value is a fault spec
/// the AP puts into that RM's branch data ([`Faults`]), where the RM reads it.
#[rustfmt::skip]
pub const TRANS_OUT_FAULTS: &[Param] = &[
    Param { name: "trans_out_try", kind: Fault(Op::Try), doc: "TransOut's Try" },
    Param { name: "trans_out_confirm", kind: Fault(Op::Confirm), doc: "TransOut's Confirm" },
    Param { name: "trans_out_cancel", kind: Fault(Op::Cancel), doc: "TransOut's Cancel" },
];

/// The fault parameters of bank B, as [`TRANS_OUT_FAULTS`].
#[rustfmt::skip]
pub const TRANS_IN_FAULTS: &[Param] = &[
    Param { name: "trans_in_try", kind: Fault(Op::Try), doc: "TransIn's Try" },
    Param { name: "trans_in_confirm", kind: Fault(Op::Confirm), doc: "TransIn's Confirm" },
    Param { name: "trans_in_cancel", kind: Fault(Op::Cancel), doc: "TransIn's Cancel" },
];

/// The fault parameters of the stock service, as [`TRANS_OUT_FAULTS`].
#[rustfmt::skip]
pub const STOCK_FAULTS: &[Param] = &[
    Param { name: "stock_try", kind: Fault(Op::Try), doc: "Stock's Try" },
    Param { name: "stock_confirm", kind: Fault(Op::Confirm), doc: "Stock's Confirm" },
    Param { name: "stock_cancel", kind: Fault(Op::Cancel), doc: "Stock's Cancel" },
];

/// The checked parameters of a fire request: `B`, the scenario's own ([`Transfer`] or
/// [`Purchase`]), and those every scenario takes ([`COMMON_PARAMS`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FireParams<B> {
    /// The scenario's own parameters.
    #[serde(flatten)]
    pub business: B,
    /// `timeout_to_fail`, seconds, or the coordinator's default.
    pub timeout_to_fail: Option<u64>,
    /// `retry_interval`, seconds, or the coordinator's default.
    pub retry_interval: Option<u64>,
    /// `request_timeout`, seconds, or the coordinator's default.
    pub request_timeout: Option<u64>,
    /// `wait_result`: answer once the second phase has finished.
    pub wait_result: bool,
    /// `crash_after_try`: the AP process exits after its Trys (test only).
    pub crash_after_try: bool,
    /// `gid_prefix`: the gid becomes `<prefix>-<newGid>`.
    pub gid_prefix: Option<String>,
    /// The fault parameters given, by RM.
    pub faults: Faults,
}

impl<B> FireParams<B> {
    /// The global transaction's options.
    pub fn trans_options(&self) -> TransOptions {
        TransOptions {
            wait_result: self.wait_result,
            timeout_to_fail: self.timeout_to_fail,
            retry_interval: self.retry_interval,
            request_timeout: self.request_timeout,
            ..TransOptions::default()
        }
    }
}

/// The faults given for each RM's Try, Confirm and Cancel: what its branch data carries as
/// `fault` (`None`: no fault parameter for that RM).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Faults {
    /// `trans_out_try|confirm|cancel`.
    pub trans_out: Option<BranchFaults>,
    /// `trans_in_try|confirm|cancel`.
    pub trans_in: Option<BranchFaults>,
    /// `stock_try|confirm|cancel`.
    pub stock: Option<BranchFaults>,
}

/// The own parameters of a transfer (`fireTcc`, `fireTccRollback`, `fireTccNested`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Transfer {
    /// Minor units to move.
    pub amount: i64,
    /// The account debited in bank A.
    pub from: i64,
    /// The account credited in bank B.
    pub to: i64,
}

/// The own parameters of `firePurchase`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Purchase {
    /// The product reserved in the stock service.
    pub product_id: i64,
    /// Units bought.
    pub quantity: i64,
    /// The account debited in bank A.
    pub buyer: i64,
    /// The account credited in bank B.
    pub merchant: i64,
}
