//! The AP's scenarios by name, and the parameters each accepts: what the routes, the metrics
//! and the OpenAPI description share. What a scenario *does* is its handler in
//! [`crate::routes::fire`]; see `docs/ARCHITECTURE.md#scenarios`.

use crate::params::{ParamSpec, Rm, MAX_OPTION_SECS, MAX_REQUEST_TIMEOUT_SECS};

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

    /// Every parameter it accepts: its business parameters, the common ones, and the fault
    /// parameters of each RM it calls (a fault for an RM it does not call is refused as unknown).
    pub fn params(self) -> Vec<ParamSpec> {
        let (business, rms): (&[ParamSpec], &[Rm]) = match self {
            Scenario::FirePurchase => (PURCHASE_PARAMS, &[Rm::TransOut, Rm::TransIn, Rm::Stock]),
            _ => (TRANSFER_PARAMS, &[Rm::TransOut, Rm::TransIn]),
        };
        let faults = rms.iter().flat_map(|rm| rm.fault_params());
        business
            .iter()
            .chain(COMMON_PARAMS)
            .chain(faults)
            .copied()
            .collect()
    }
}

/// The parameters of a transfer (`fireTcc`, `fireTccRollback`, `fireTccNested`).
pub const TRANSFER_PARAMS: &[ParamSpec] = &[
    ParamSpec::positive_int("amount", 30, "minor units to move"),
    ParamSpec::positive_int("from", 1, "account debited in bank A (trans-out)"),
    ParamSpec::positive_int("to", 1, "account credited in bank B (trans-in)"),
];

/// The parameters of `firePurchase`.
pub const PURCHASE_PARAMS: &[ParamSpec] = &[
    ParamSpec::positive_int("product_id", 1, "product reserved in the stock service"),
    ParamSpec::positive_int("quantity", 1, "units bought"),
    ParamSpec::positive_int("buyer", 1, "account debited in bank A (trans-out)"),
    ParamSpec::positive_int("merchant", 1, "account credited in bank B (trans-in)"),
];

/// The test-only parameter that makes the AP exit after its Trys (an AP crash). Like the fault
/// parameters, it needs `FAULT_INJECTION=on`.
pub const CRASH_AFTER_TRY: &str = "crash_after_try";

/// Parameters every scenario takes: the global transaction's options (seconds, see
/// `docs/PROTOCOL.md`) and the test-only AP crash.
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
