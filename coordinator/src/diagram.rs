//! A global transaction as it really happened, drawn as a Mermaid `sequenceDiagram` from its
//! event log ([`crate::events`]); served by `GET /api/admin/transactions/{gid}/diagram`.
//!
//! [`render`] is a pure function of the events, so what it draws is tested without a database.
//! The participants are `AP`, `TM` and one per branch service (`TransOut`, `TransIn`, `Stock`,
//! the nested AP branch `TransInNested`, ...: [`crate::events::service_name`]), declared in the
//! order they first appear. The messages, in order:
//!
//! * `AP->>TM: prepare`, `AP->>TM: registerBranch 01 (TransOut)`;
//! * the Try of each branch, `AP->>TransOut: Try 01` and its answer
//!   `TransOut-->>AP: 200 SUCCESS (3 ms)`, from the AP client's reports. A branch whose Try was not
//!   reported (a DTM client, which does not report) gets `Note over AP,TransOut: Try 01 not
//!   reported by the AP's client` instead. A child branch of a nested TCC (`0201` under `02`) is
//!   registered and tried by its parent's service, and the parent's answer comes after the
//!   child's;
//! * `AP->>TM: submit` or `AP->>TM: abort: <reason>` (or `Note over TM: abort by timeout:
//!   Timeout after N seconds`), then the status change as a note;
//! * each Confirm/Cancel attempt `TM->>TransIn: Confirm 02 (attempt 2)` with its answer: HTTP
//!   status and outcome, the message or error, the latency; `--x` when no answer came back;
//!   each retry as a note with its delay; finally `Note over TM: submitted -> succeed`.
//!
//! Text that comes from outside (reasons, messages, URLs) is made safe for Mermaid: `#` and `;`
//! end a message's text in Mermaid's grammar, and its entity codes (`#59;`) are not decoded by
//! the renderer the admin page vendors (11.x draws them as garbage), so they become look-alikes
//! (`＃`, `,`); `<` and `>` become `‹` and `›` so that no renderer reads a tag; line breaks become
//! spaces; long texts are cut.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use crate::events::{Event, EventKind};

/// Longest text kept from a message, reason or error, in characters.
pub const MAX_TEXT: usize = 120;

/// The Mermaid `sequenceDiagram` of the transaction `gid` from its `events` (in log order).
/// Always a complete diagram: without events it says that nothing was recorded.
pub fn render(gid: &str, events: &[Event]) -> String {
    let mut diagram = Diagram::new(events);
    for event in events {
        diagram.event(event);
    }
    diagram.close_tries(|_| false);
    diagram.finish(gid)
}

/// Makes `raw` safe as the text of a Mermaid message, note or participant label (see the module
/// docs), cut to [`MAX_TEXT`] characters.
pub fn escape(raw: &str) -> String {
    let mut out = String::new();
    for (n, c) in raw.chars().enumerate() {
        if n == MAX_TEXT {
            out.push('…');
            break;
        }
        match c {
            '#' => out.push('＃'),
            ';' => out.push(','),
            '<' => out.push('‹'),
            '>' => out.push('›'),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Mermaid words that cannot name a participant.
const RESERVED: [&str; 28] = [
    "participant",
    "actor",
    "as",
    "note",
    "over",
    "left",
    "right",
    "of",
    "loop",
    "alt",
    "else",
    "opt",
    "par",
    "and",
    "rect",
    "critical",
    "break",
    "end",
    "box",
    "activate",
    "deactivate",
    "title",
    "autonumber",
    "link",
    "links",
    "create",
    "destroy",
    "sequencediagram",
];

/// Participants in first-appearance order: (id used in messages, label when it differs).
struct Participants {
    declared: Vec<(String, Option<String>)>,
    by_name: HashMap<String, String>,
}

impl Participants {
    fn new() -> Self {
        let mut p = Participants {
            declared: Vec::new(),
            by_name: HashMap::new(),
        };
        p.id("AP");
        p.id("TM");
        p
    }

    /// The id of the participant `name`, declared now if it is new. A name that is a plain
    /// identifier (and no Mermaid word, and not taken) is its own id; others (`host:port`,
    /// `trans-in`) get an id `S<n>` and are shown by their name.
    fn id(&mut self, name: &str) -> String {
        if let Some(id) = self.by_name.get(name) {
            return id.clone();
        }
        let plain = name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !RESERVED.contains(&name.to_ascii_lowercase().as_str())
            && !self.declared.iter().any(|(id, _)| id == name);
        let (id, label) = if plain {
            (name.to_owned(), None)
        } else {
            let mut n = self.declared.len();
            let id = loop {
                let id = format!("S{n}");
                if !self.by_name.contains_key(&id) && !self.declared.iter().any(|(d, _)| *d == id) {
                    break id;
                }
                n += 1;
            };
            (id, Some(escape(name)))
        };
        self.declared.push((id.clone(), label));
        self.by_name.insert(name.to_owned(), id.clone());
        id
    }
}

struct Diagram<'e> {
    participants: Participants,
    lines: Vec<String>,
    /// branch_id -> service name, from registrations (then calls and reports).
    services: HashMap<&'e str, &'e str>,
    /// The first Try report of each branch.
    reports: HashMap<&'e str, &'e Event>,
    /// Trys drawn as called and not yet answered, outermost first.
    open: Vec<&'e str>,
    /// Trys whose answer is drawn.
    answered: HashSet<&'e str>,
    /// The last global status a state event announced.
    status: Option<&'e str>,
    /// A Confirm/Cancel the TM started (`branch_calling`) whose answer is not drawn yet.
    calling: Option<&'e Event>,
}

impl<'e> Diagram<'e> {
    fn new(events: &'e [Event]) -> Self {
        let mut services = HashMap::new();
        let mut reports = HashMap::new();
        for e in events {
            let (Some(branch), Some(target)) = (e.branch_id.as_deref(), e.target.as_deref()) else {
                continue;
            };
            if e.event_kind() == Some(EventKind::BranchRegistered) {
                services.insert(branch, target);
            } else {
                services.entry(branch).or_insert(target);
            }
            if e.event_kind() == Some(EventKind::TryReported) {
                reports.entry(branch).or_insert(e);
            }
        }
        Diagram {
            participants: Participants::new(),
            lines: Vec::new(),
            services,
            reports,
            open: Vec::new(),
            answered: HashSet::new(),
            status: None,
            calling: None,
        }
    }

    fn line(&mut self, line: String) {
        self.lines.push(line);
    }

    fn service_of(&mut self, branch: &str) -> String {
        let name = self.services.get(branch).copied().unwrap_or("unknown");
        self.participants.id(name)
    }

    /// Who registers and tries `branch`: the AP, or for a child of a nested TCC (`0201`) the
    /// service of its parent branch (`02`), itself an AP inside its Try.
    fn caller_of(&mut self, branch: &str) -> String {
        let parent = branch
            .len()
            .checked_sub(2)
            .filter(|&n| n > 0)
            .and_then(|n| branch.get(..n));
        match parent {
            Some(parent) if self.services.contains_key(parent) => self.service_of(parent),
            _ => "AP".to_owned(),
        }
    }

    /// Draws the answers of the open Trys, innermost first, while `keep` says no.
    fn close_tries(&mut self, keep: impl Fn(&str) -> bool) {
        while let Some(&top) = self.open.last() {
            if keep(top) {
                break;
            }
            self.open.pop();
            self.answer_try(top);
        }
    }

    fn answer_try(&mut self, branch: &'e str) {
        if !self.answered.insert(branch) {
            return;
        }
        let Some(report) = self.reports.get(branch).copied() else {
            return;
        };
        let (caller, service) = (self.caller_of(branch), self.service_of(branch));
        let reply = answer_text(report);
        let arrow = if report.http_status.is_some() {
            "-->>"
        } else {
            "--x"
        };
        self.line(format!("{service}{arrow}{caller}: {reply}"));
    }

    fn event(&mut self, e: &'e Event) {
        let branch = e.branch_id.as_deref().unwrap_or("?");
        match e.event_kind() {
            Some(EventKind::BranchRegistered) => {
                // A registration inside an open Try is that Try's nested child: it stays open.
                self.close_tries(|open| is_descendant(branch, open));
                let caller = self.caller_of(branch);
                let service = self.service_of(branch);
                let label = self.services.get(branch).copied().unwrap_or("unknown");
                self.line(format!(
                    "{caller}->>TM: registerBranch {} ({})",
                    escape(branch),
                    escape(label)
                ));
                if self.reports.contains_key(branch) {
                    self.line(format!("{caller}->>{service}: Try {}", escape(branch)));
                    if let Some(b) = e.branch_id.as_deref() {
                        self.open.push(b);
                    }
                } else {
                    self.line(format!(
                        "Note over {caller},{service}: Try {} not reported by the AP's client",
                        escape(branch)
                    ));
                }
            }
            Some(EventKind::TryReported) => {
                self.close_tries(|open| open == branch || is_descendant(branch, open));
                if self.open.last().copied() == Some(branch) {
                    self.open.pop();
                    self.answer_try(e.branch_id.as_deref().unwrap_or("?"));
                } else if !self.answered.contains(branch) && self.reports.get(branch) == Some(&e) {
                    // Reported without a registration in the log: draw the call here.
                    let (caller, service) = (self.caller_of(branch), self.service_of(branch));
                    self.line(format!("{caller}->>{service}: Try {}", escape(branch)));
                    self.answer_try(e.branch_id.as_deref().unwrap_or("?"));
                }
            }
            Some(EventKind::BranchCalling) => {
                self.close_tries(|_| false);
                // Calls of one transaction are sequential: a call still open when the next one
                // starts never had its answer recorded.
                self.unanswered_call(
                    "answer never recorded: the coordinator stopped during this call or a later one of its pass",
                );
                self.calling = Some(e);
            }
            kind => {
                self.close_tries(|_| false);
                if kind == Some(EventKind::BranchCalled) {
                    match self.calling {
                        Some(c) if c.branch_id == e.branch_id && c.op == e.op => {
                            self.calling = None
                        }
                        Some(_) => self.unanswered_call(
                            "answer never recorded: the coordinator stopped during this call or a later one of its pass",
                        ),
                        None => {}
                    }
                }
                self.state_or_call(kind, e, branch);
            }
        }
    }

    /// Draws the open `branch_calling` (if any) as a call without an answer, with `why`.
    fn unanswered_call(&mut self, why: &str) {
        let Some(call) = self.calling.take() else {
            return;
        };
        let branch = call.branch_id.as_deref().unwrap_or("?");
        let service = self.service_of(branch);
        self.line(format!(
            "TM->>{service}: {} {}",
            op_name(call.op.as_deref()),
            escape(branch)
        ));
        self.line(format!("Note over TM,{service}: {why}"));
    }

    fn state_or_call(&mut self, kind: Option<EventKind>, e: &'e Event, branch: &str) {
        let detail = e.detail.as_deref().map(escape).unwrap_or_default();
        match kind {
            Some(EventKind::Prepared) => {
                self.status = Some("prepared");
                self.line("AP->>TM: prepare".into());
            }
            Some(EventKind::Submitted) => {
                self.status = Some("submitted");
                self.line("AP->>TM: submit".into());
                self.line("Note over TM: prepared -> submitted".into());
            }
            Some(EventKind::Aborting) => {
                self.status = Some("aborting");
                if e.actor == "timeout" {
                    self.line(format!("Note over TM: abort by timeout: {detail}"));
                } else if detail.is_empty() {
                    self.line("AP->>TM: abort".into());
                } else {
                    self.line(format!("AP->>TM: abort: {detail}"));
                }
                self.line("Note over TM: prepared -> aborting".into());
            }
            Some(EventKind::BranchCalled) => {
                let service = self.service_of(branch);
                let op = op_name(e.op.as_deref());
                let attempt = match e.attempt {
                    Some(n) if n > 1 => format!(" (attempt {n})"),
                    _ => String::new(),
                };
                self.line(format!("TM->>{service}: {op} {}{attempt}", escape(branch)));
                let arrow = if e.http_status.is_some() {
                    "-->>"
                } else {
                    "--x"
                };
                self.line(format!("{service}{arrow}TM: {}", answer_text(e)));
            }
            Some(EventKind::RetryScheduled) => {
                let op = match e.op.as_deref() {
                    Some("cancel") => "Cancel",
                    _ => "Confirm",
                };
                let secs = f64::from(e.retry_in_ms.unwrap_or(0)) / 1000.0;
                let why = if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                };
                self.line(format!(
                    "Note over TM: retry {op} {} in {secs:.1} s{why}",
                    escape(branch)
                ));
            }
            Some(kind @ (EventKind::Succeed | EventKind::Failed)) => {
                let (from, to) = if kind == EventKind::Succeed {
                    ("submitted", "succeed")
                } else {
                    ("aborting", "failed")
                };
                self.status = Some(to);
                self.line(format!("Note over TM: {from} -> {to}"));
            }
            Some(EventKind::ForceStopped) => {
                let to = e.status.as_deref().unwrap_or("failed");
                let from = self.status.unwrap_or("unfinished");
                let why = if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                };
                self.line(format!(
                    "Note over TM: force-stopped by an operator{why} ({from} -> {})",
                    escape(to)
                ));
                self.status = e.status.as_deref();
            }
            Some(EventKind::RetryRequested) => {
                self.line("Note over TM: retry now, requested by an operator".into());
            }
            Some(
                EventKind::BranchRegistered | EventKind::TryReported | EventKind::BranchCalling,
            ) => {
                unreachable!("handled by Diagram::event")
            }
            None => self.line(format!("Note over TM: {}", escape(&e.kind))),
        }
    }

    fn finish(mut self, gid: &str) -> String {
        self.unanswered_call(
            "no answer recorded yet: its pass is in flight, or the coordinator stopped during it",
        );
        match self.status {
            None => self.line("Note over AP,TM: no events recorded for this transaction".into()),
            Some(status @ ("prepared" | "submitted" | "aborting")) => self.line(format!(
                "Note over TM: still {status} (the diagram shows what happened so far)"
            )),
            Some(_) => {}
        }
        let mut out = String::from("sequenceDiagram\n");
        let _ = writeln!(out, "    %% global transaction {}", escape(gid));
        for (id, label) in &self.participants.declared {
            match label {
                Some(label) => {
                    let _ = writeln!(out, "    participant {id} as {label}");
                }
                None => {
                    let _ = writeln!(out, "    participant {id}");
                }
            }
        }
        for line in &self.lines {
            let _ = writeln!(out, "    {line}");
        }
        out
    }
}

/// `Confirm`, `Cancel` or `Try`, as the diagram names an op.
fn op_name(op: Option<&str>) -> &'static str {
    match op {
        Some("confirm") => "Confirm",
        Some("cancel") => "Cancel",
        Some("try") => "Try",
        _ => "call",
    }
}

/// `true` when `branch` is a child (or deeper) of `ancestor` in a nested TCC: `0201` of `02`.
fn is_descendant(branch: &str, ancestor: &str) -> bool {
    branch.len() > ancestor.len() && branch.starts_with(ancestor)
}

/// The answer of a call or reported Try: `200 SUCCESS (3 ms)`, `409 FAILURE: message (2 ms)`,
/// `500 error: body (2 ms)`, `error: timed out after 3 s (3001 ms)`.
fn answer_text(e: &Event) -> String {
    let outcome = match e.outcome.as_deref() {
        Some("success") => "SUCCESS",
        Some("failure") => "FAILURE",
        Some("ongoing") => "ONGOING",
        Some("error") => "error",
        _ => "no outcome",
    };
    let mut text = match e.http_status {
        Some(status) => format!("{status} {outcome}"),
        None => outcome.to_owned(),
    };
    let detail = e.detail.as_deref().map(|d| match e.http_status {
        // Clients may repeat the status in the message (`HTTP 500: ...`); say it once.
        Some(status) => d
            .strip_prefix(&format!("HTTP {status}: "))
            .unwrap_or(d)
            .to_owned(),
        None => d.to_owned(),
    });
    if let Some(detail) = detail.map(readable).filter(|d| !d.is_empty()) {
        let _ = write!(text, ": {}", escape(&detail));
    }
    if let Some(ms) = e.latency_ms {
        let _ = write!(text, " ({ms} ms)");
    }
    text
}

/// A JSON error body (`{"error": "...", "message": "..."}`, as this sample's services and many
/// others answer) shown by its `message`; any other text as it is.
fn readable(detail: String) -> String {
    match serde_json::from_str::<serde_json::Value>(&detail) {
        Ok(serde_json::Value::Object(body)) => match body.get("message") {
            Some(serde_json::Value::String(message)) => message.clone(),
            _ => detail,
        },
        _ => detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    /// Builds a log the way the coordinator writes it.
    struct Log(Vec<Event>);

    impl Log {
        fn new() -> Self {
            Log(Vec::new())
        }

        fn push(&mut self, kind: &str, actor: &str, f: impl FnOnce(&mut Event)) -> &mut Self {
            let mut e = Event {
                id: self.0.len() as i64 + 1,
                gid: "g1".into(),
                kind: kind.into(),
                actor: actor.into(),
                status: None,
                branch_id: None,
                op: None,
                target: None,
                url: None,
                outcome: None,
                http_status: None,
                latency_ms: None,
                attempt: None,
                retry_in_ms: None,
                detail: None,
                create_time: Utc::now(),
            };
            f(&mut e);
            self.0.push(e);
            self
        }

        fn prepared(&mut self) -> &mut Self {
            self.push("prepared", "ap", |e| e.status = Some("prepared".into()))
        }

        fn registered(&mut self, branch: &str, service: &str) -> &mut Self {
            self.push("branch_registered", "ap", |e| {
                e.branch_id = Some(branch.into());
                e.target = Some(service.into());
            })
        }

        fn tried(
            &mut self,
            branch: &str,
            service: &str,
            status: Option<i32>,
            outcome: &str,
        ) -> &mut Self {
            self.push("try_reported", "ap", |e| {
                e.branch_id = Some(branch.into());
                e.op = Some("try".into());
                e.target = Some(service.into());
                e.outcome = Some(outcome.into());
                e.http_status = status;
                e.latency_ms = Some(3);
                if outcome == "failure" {
                    e.detail = Some("insufficient funds".into());
                }
            })
        }

        fn state(&mut self, kind: &str, actor: &str, detail: Option<&str>) -> &mut Self {
            self.push(kind, actor, |e| {
                e.status = Some(kind.into());
                e.detail = detail.map(str::to_owned);
            })
        }

        fn calling(&mut self, branch: &str, service: &str, op: &str) -> &mut Self {
            self.push("branch_calling", "tm", |e| {
                e.branch_id = Some(branch.into());
                e.op = Some(op.into());
                e.target = Some(service.into());
            })
        }

        fn called(
            &mut self,
            branch: &str,
            service: &str,
            op: &str,
            status: Option<i32>,
            outcome: &str,
            attempt: i32,
        ) -> &mut Self {
            self.push("branch_called", "tm", |e| {
                e.branch_id = Some(branch.into());
                e.op = Some(op.into());
                e.target = Some(service.into());
                e.outcome = Some(outcome.into());
                e.http_status = status;
                e.latency_ms = Some(2);
                e.attempt = Some(attempt);
                if outcome == "error" {
                    e.detail = Some(
                        if status.is_some() {
                            "injected fault"
                        } else {
                            "timed out after 3 s"
                        }
                        .into(),
                    );
                }
            })
        }

        fn retry(&mut self, branch: &str, ms: i32) -> &mut Self {
            self.push("retry_scheduled", "tm", |e| {
                e.branch_id = Some(branch.into());
                e.op = Some("confirm".into());
                e.retry_in_ms = Some(ms);
                e.detail = Some("backoff step now 2 s".into());
            })
        }

        fn render(&self) -> String {
            render("g1", &self.0)
        }
    }

    fn body(diagram: &str) -> Vec<&str> {
        diagram.lines().map(str::trim).collect()
    }

    #[test]
    fn a_committed_transfer_shows_every_try_and_confirm_in_order() {
        let diagram = Log::new()
            .prepared()
            .registered("01", "TransOut")
            .tried("01", "TransOut", Some(200), "success")
            .registered("02", "TransIn")
            .tried("02", "TransIn", Some(200), "success")
            .state("submitted", "ap", None)
            .called("01", "TransOut", "confirm", Some(200), "success", 1)
            .called("02", "TransIn", "confirm", Some(200), "success", 1)
            .state("succeed", "tm", None)
            .render();
        assert_eq!(
            body(&diagram),
            [
                "sequenceDiagram",
                "%% global transaction g1",
                "participant AP",
                "participant TM",
                "participant TransOut",
                "participant TransIn",
                "AP->>TM: prepare",
                "AP->>TM: registerBranch 01 (TransOut)",
                "AP->>TransOut: Try 01",
                "TransOut-->>AP: 200 SUCCESS (3 ms)",
                "AP->>TM: registerBranch 02 (TransIn)",
                "AP->>TransIn: Try 02",
                "TransIn-->>AP: 200 SUCCESS (3 ms)",
                "AP->>TM: submit",
                "Note over TM: prepared -> submitted",
                "TM->>TransOut: Confirm 01",
                "TransOut-->>TM: 200 SUCCESS (2 ms)",
                "TM->>TransIn: Confirm 02",
                "TransIn-->>TM: 200 SUCCESS (2 ms)",
                "Note over TM: submitted -> succeed",
            ]
        );
    }

    #[test]
    fn a_rollback_shows_the_refusal_the_abort_and_both_cancels_in_reverse_order() {
        let diagram = Log::new()
            .prepared()
            .registered("01", "TransOut")
            .tried("01", "TransOut", Some(200), "success")
            .registered("02", "TransIn")
            .tried("02", "TransIn", Some(409), "failure")
            .state(
                "aborting",
                "ap",
                Some("branch 02 Try refused: insufficient funds"),
            )
            .called("02", "TransIn", "cancel", Some(200), "success", 1)
            .called("01", "TransOut", "cancel", Some(200), "success", 1)
            .state("failed", "tm", None)
            .render();
        let lines = body(&diagram);
        assert_eq!(
            lines[lines.len() - 8..],
            [
                "TransIn-->>AP: 409 FAILURE: insufficient funds (3 ms)",
                "AP->>TM: abort: branch 02 Try refused: insufficient funds",
                "Note over TM: prepared -> aborting",
                "TM->>TransIn: Cancel 02",
                "TransIn-->>TM: 200 SUCCESS (2 ms)",
                "TM->>TransOut: Cancel 01",
                "TransOut-->>TM: 200 SUCCESS (2 ms)",
                "Note over TM: aborting -> failed",
            ]
        );
    }

    #[test]
    fn each_failed_confirm_attempt_and_its_retry_come_before_the_success() {
        let diagram = Log::new()
            .prepared()
            .registered("01", "TransOut")
            .tried("01", "TransOut", Some(200), "success")
            .state("submitted", "ap", None)
            .called("01", "TransOut", "confirm", Some(500), "error", 1)
            .retry("01", 1100)
            .called("01", "TransOut", "confirm", None, "error", 2)
            .retry("01", 2150)
            .called("01", "TransOut", "confirm", Some(200), "success", 3)
            .state("succeed", "tm", None)
            .render();
        let lines = body(&diagram);
        assert_eq!(
            lines[lines.len() - 9..],
            [
                "TM->>TransOut: Confirm 01",
                "TransOut-->>TM: 500 error: injected fault (2 ms)",
                "Note over TM: retry Confirm 01 in 1.1 s (backoff step now 2 s)",
                "TM->>TransOut: Confirm 01 (attempt 2)",
                "TransOut--xTM: error: timed out after 3 s (2 ms)",
                "Note over TM: retry Confirm 01 in 2.1 s (backoff step now 2 s)",
                "TM->>TransOut: Confirm 01 (attempt 3)",
                "TransOut-->>TM: 200 SUCCESS (2 ms)",
                "Note over TM: submitted -> succeed",
            ]
        );
    }

    #[test]
    fn a_call_whose_answer_was_never_recorded_is_drawn_without_one() {
        // The coordinator was killed during Confirm 02; after its restart the call is sent again.
        let diagram = Log::new()
            .prepared()
            .registered("01", "TransOut")
            .registered("02", "TransIn")
            .state("submitted", "ap", None)
            .calling("01", "TransOut", "confirm")
            .called("01", "TransOut", "confirm", Some(200), "success", 1)
            .calling("02", "TransIn", "confirm")
            .calling("02", "TransIn", "confirm")
            .called("02", "TransIn", "confirm", Some(200), "success", 1)
            .state("succeed", "tm", None)
            .calling("02", "TransIn", "confirm")
            .render();
        let lines = body(&diagram);
        let from = lines
            .iter()
            .position(|l| *l == "TM->>TransOut: Confirm 01")
            .unwrap();
        assert_eq!(
            lines[from..],
            [
                "TM->>TransOut: Confirm 01",
                "TransOut-->>TM: 200 SUCCESS (2 ms)",
                "TM->>TransIn: Confirm 02",
                "Note over TM,TransIn: answer never recorded: the coordinator stopped during this call or a later one of its pass",
                "TM->>TransIn: Confirm 02",
                "TransIn-->>TM: 200 SUCCESS (2 ms)",
                "Note over TM: submitted -> succeed",
                "TM->>TransIn: Confirm 02",
                "Note over TM,TransIn: no answer recorded yet: its pass is in flight, or the coordinator stopped during it",
            ]
        );
    }

    #[test]
    fn a_try_that_was_not_reported_is_noted_as_such() {
        let diagram = Log::new()
            .prepared()
            .registered("01", "TransOut")
            .state("submitted", "ap", None)
            .render();
        assert!(
            diagram.contains(
                "Note over AP,TransOut: Try 01 not reported by the AP's client\n    AP->>TM: submit"
            ),
            "{diagram}"
        );
        assert!(
            diagram.ends_with(
                "    Note over TM: still submitted (the diagram shows what happened so far)\n"
            ),
            "{diagram}"
        );
    }

    #[test]
    fn a_nested_child_is_registered_and_tried_by_its_parent_inside_the_parents_try() {
        let diagram = Log::new()
            .prepared()
            .registered("01", "TransOut")
            .tried("01", "TransOut", Some(200), "success")
            .registered("02", "TransInNested")
            .registered("0201", "TransIn")
            .tried("0201", "TransIn", Some(200), "success")
            .tried("02", "TransInNested", Some(200), "success")
            .state("submitted", "ap", None)
            .render();
        let lines = body(&diagram);
        assert_eq!(
            lines[2..7],
            [
                "participant AP",
                "participant TM",
                "participant TransOut",
                "participant TransInNested",
                "participant TransIn",
            ]
        );
        let from = lines
            .iter()
            .position(|l| *l == "AP->>TM: registerBranch 02 (TransInNested)")
            .unwrap();
        assert_eq!(
            lines[from..from + 7],
            [
                "AP->>TM: registerBranch 02 (TransInNested)",
                "AP->>TransInNested: Try 02",
                "TransInNested->>TM: registerBranch 0201 (TransIn)",
                "TransInNested->>TransIn: Try 0201",
                "TransIn-->>TransInNested: 200 SUCCESS (3 ms)",
                "TransInNested-->>AP: 200 SUCCESS (3 ms)",
                "AP->>TM: submit",
            ]
        );
    }

    #[test]
    fn a_report_that_arrives_late_is_still_drawn_before_the_aps_next_step() {
        // A client reporting asynchronously: Try 01's report lands after branch 02's registration.
        let diagram = Log::new()
            .prepared()
            .registered("01", "TransOut")
            .registered("02", "TransIn")
            .tried("01", "TransOut", Some(200), "success")
            .tried("02", "TransIn", Some(200), "success")
            .state("submitted", "ap", None)
            .render();
        let lines = body(&diagram);
        let from = lines
            .iter()
            .position(|l| *l == "AP->>TransOut: Try 01")
            .unwrap();
        assert_eq!(
            lines[from..from + 5],
            [
                "AP->>TransOut: Try 01",
                "TransOut-->>AP: 200 SUCCESS (3 ms)",
                "AP->>TM: registerBranch 02 (TransIn)",
                "AP->>TransIn: Try 02",
                "TransIn-->>AP: 200 SUCCESS (3 ms)",
            ]
        );
    }

    #[test]
    fn a_timeout_abort_says_so_and_a_lost_try_answer_is_crossed() {
        let diagram = Log::new()
            .prepared()
            .registered("01", "TransOut")
            .tried("01", "TransOut", None, "error")
            .state("aborting", "timeout", Some("Timeout after 3 seconds"))
            .render();
        assert!(diagram.contains("TransOut--xAP: error (3 ms)"), "{diagram}");
        assert!(
            diagram.contains(
                "Note over TM: abort by timeout: Timeout after 3 seconds\n    Note over TM: prepared -> aborting"
            ),
            "{diagram}"
        );
    }

    #[test]
    fn a_json_error_body_is_shown_by_its_message() {
        let diagram = Log::new()
            .prepared()
            .state("submitted", "ap", None)
            .push("branch_called", "tm", |e| {
                e.branch_id = Some("01".into());
                e.op = Some("confirm".into());
                e.target = Some("TransIn".into());
                e.outcome = Some("error".into());
                e.http_status = Some(500);
                e.latency_ms = Some(4);
                e.attempt = Some(1);
                e.detail =
                    Some(r#"{"error":"injected_error","message":"fails on purpose"}"#.into());
            })
            .render();
        assert!(
            diagram.contains("TransIn-->>TM: 500 error: fails on purpose (4 ms)"),
            "{diagram}"
        );
        assert_eq!(readable("[1, 2]".into()), "[1, 2]");
        assert_eq!(readable(r#"{"error":"x"}"#.into()), r#"{"error":"x"}"#);
    }

    #[test]
    fn text_from_outside_cannot_break_the_diagram() {
        assert_eq!(escape("a;b#c<d>e\nf:g"), "a,b＃c‹d›e f:g");
        let long = "x".repeat(MAX_TEXT + 10);
        assert_eq!(escape(&long).chars().count(), MAX_TEXT + 1);
        let diagram = Log::new()
            .prepared()
            .state("aborting", "ap", Some("line one;\nline two # <b>"))
            .render();
        assert!(
            diagram.contains("AP->>TM: abort: line one, line two ＃ ‹b›"),
            "{diagram}"
        );
        for line in diagram
            .lines()
            .filter(|l| !l.trim_start().starts_with("%%"))
        {
            assert!(!line.contains([';', '#', '<']), "{line}");
        }
    }

    #[test]
    fn services_that_are_not_plain_names_are_aliased() {
        let diagram = Log::new()
            .prepared()
            .registered("01", "127.0.0.1:9000")
            .registered("02", "trans-in")
            .registered("03", "end")
            .render();
        for line in [
            "participant S2 as 127.0.0.1:9000",
            "participant S3 as trans-in",
            "participant S4 as end",
            "AP->>TM: registerBranch 01 (127.0.0.1:9000)",
            "Note over AP,S2: Try 01 not reported by the AP's client",
            "Note over AP,S3: Try 02 not reported by the AP's client",
        ] {
            assert!(diagram.contains(line), "{line} missing from\n{diagram}");
        }
    }

    #[test]
    fn without_events_the_diagram_is_still_valid_and_says_so() {
        assert_eq!(
            render("g0", &[]),
            "sequenceDiagram\n    %% global transaction g0\n    participant AP\n    participant TM\n    Note over AP,TM: no events recorded for this transaction\n"
        );
    }

    #[test]
    fn an_operator_stop_is_drawn_with_the_status_it_interrupted() {
        let diagram = Log::new()
            .prepared()
            .state("submitted", "ap", None)
            .push("force_stopped", "admin", |e| {
                e.status = Some("failed".into());
                e.detail = Some("repaired by hand".into());
            })
            .render();
        assert!(
            diagram.ends_with(
                "    Note over TM: force-stopped by an operator: repaired by hand (submitted -> failed)\n"
            ),
            "{diagram}"
        );
    }
}
