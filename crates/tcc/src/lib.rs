//! TCC (Try-Confirm-Cancel) for Rust services, wire-compatible with DTM (dtm-labs/dtm).
//!
//! This is the crate a real service copies. Its layout:
//!
//! * [`protocol`]: the wire vocabulary: [`protocol::Op`], [`protocol::GlobalStatus`], the branch
//!   query, a branch's answer ([`protocol::BranchReply`]) and how any HTTP answer of a branch is
//!   read ([`protocol::BranchOutcome`]), branch ids. No I/O.
//! * [`client`] (feature `client`): the AP side. [`client::TccClient::tcc_global_transaction`]
//!   prepares a global transaction, runs your closure, whose [`client::Tcc::call_branch`] calls
//!   register each branch and then call its Try, and submits or aborts.
//!   [`client::TccClient::tcc_from_query`] rebuilds the transaction inside a branch's Try, for
//!   nested TCC (child branches `0201`, `0202`, ... of branch `02`).
//! * [`barrier`] (feature `barrier`): the RM side. [`barrier::BranchBarrier::call`] runs your
//!   Try/Confirm/Cancel inside one Postgres transaction with the sub-transaction barrier, which
//!   turns empty compensations, hanging Trys and duplicates into no-ops.
//! * [`signing`]: HMAC-SHA256 signatures of the TM's Confirm/Cancel calls
//!   ([`signing::sign`], [`signing::verify`]), so that an RM only obeys its TM.
//! * [`actix`] (feature `actix`): what surrounds a branch handler's barrier call: the op-bound
//!   branch query extractors ([`actix::TryBranch`], ...), the SUCCESS (200) / FAILURE (409) /
//!   ONGOING (425) answer ([`protocol::BranchReply`] and the barrier's decision as responders),
//!   and the raw-body checks of who is calling ([`actix::settle_caller`], [`actix::try_caller`]).
//!
//! The TM (the coordinator) is a separate binary of this workspace; any DTM server works too.

#![warn(missing_docs)]

pub mod protocol;
pub mod signing;

#[cfg(feature = "actix")]
pub mod actix;
#[cfg(feature = "barrier")]
pub mod barrier;
#[cfg(feature = "client")]
pub mod client;
