#!/usr/bin/env python3
"""Compatibility check: DTM's own Python client drives our coordinator and bank RMs.

Usage: scripts/dtmcli_check.py [--dtm URL] [--trans-out URL] [--trans-in URL]
                               [--account N] [--amount N] [--timeout SECONDS]

Needs `pip install dtmcli==1.7.7.0` (scripts/dtmcli_check.sh makes a venv, starts a private copy
of the system and runs this). Base URLs default to the environment variables the AP itself
reads (DTM_URL, TRANS_OUT_URL, TRANS_IN_URL), then to the local ports of scripts/up.sh.

Two global transactions, each with a TransOut and a TransIn branch (body
{"account_id": N, "amount": N}, amounts in integer minor units):

1. success: dtmcli's tcc_global_transaction registers both branches, calls both Trys, submits;
   the coordinator must end `succeed`, bank A's account down by the amount, bank B's up by it,
   and no frozen funds (trading_balance) left on either side.
2. rollback: TransIn's body carries "fault": {"try": "failure"}, so its Try answers 409;
   dtmcli aborts (printing the exception's traceback: that is expected) and returns "";
   the coordinator must end `failed` with both balances unchanged.

dtmcli 1.7.7.0 neither sets wait_result nor waits for the second phase, so the final status is
polled from the coordinator's `query` endpoint, with a deadline. Exits 1 on any mismatch.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request

try:
    from dtmcli import tcc, utils
except ImportError:
    sys.exit("dtmcli is not installed: pip install dtmcli==1.7.7.0 (or run scripts/dtmcli_check.sh)")

FINAL = ("succeed", "failed")


class Mismatch(Exception):
    """The system did not behave as DTM's client expects."""


def get_json(url):
    """GET url and decode its JSON body; raises Mismatch on a non-200 answer."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        body = e.read().decode("utf-8", "replace")
        raise Mismatch("GET %s answered %s: %s" % (url, e.code, body)) from None
    except (urllib.error.URLError, OSError) as e:
        raise Mismatch("GET %s failed: %s (is the system up?)" % (url, e)) from None


def account(bank_url, account_id):
    """(balance, trading_balance) of one account, in minor units."""
    a = get_json("%s/accounts/%d" % (bank_url, account_id))
    try:
        return int(a["balance"]), int(a["trading_balance"])
    except (KeyError, TypeError, ValueError):
        raise Mismatch("GET %s/accounts/%d: no integer balance/trading_balance in %r" % (bank_url, account_id, a)) from None


def query(dtm, gid):
    return get_json("%s/query?gid=%s" % (dtm, gid))


def wait_final(dtm, gid, timeout):
    """Polls the coordinator until the global transaction is succeed/failed; returns the record."""
    deadline = time.monotonic() + timeout
    record = None
    while time.monotonic() < deadline:
        record = query(dtm, gid)
        if (record.get("transaction") or {}).get("status") in FINAL:
            return record
        time.sleep(0.2)
    status = ((record or {}).get("transaction") or {}).get("status")
    raise Mismatch("gid %s: still %r after %ss, expected a final status" % (gid, status, timeout))


def describe(record):
    t = record.get("transaction") or {}
    lines = ["  transaction: gid=%s trans_type=%s status=%s%s" % (
        t.get("gid"), t.get("trans_type"), t.get("status"),
        " rollback_reason=%r" % t["rollback_reason"] if t.get("rollback_reason") else "")]
    for b in record.get("branches") or []:
        lines.append("  branch %s %-8s %-8s %s" % (b.get("branch_id"), b.get("op"), b.get("status"), b.get("url")))
    return "\n".join(lines)


def check_ops(record, op, want_status, problems):
    """Every branch op row `op` (confirm/cancel) has `want_status`; there is one per branch."""
    rows = [b for b in record.get("branches") or [] if b.get("op") == op]
    if len(rows) != 2:
        problems.append("expected 2 %s ops in the coordinator's record, found %d" % (op, len(rows)))
    for b in rows:
        if b.get("status") != want_status:
            problems.append("branch %s %s is %r, expected %r" % (b.get("branch_id"), op, b.get("status"), want_status))


def run(args, name, in_body_extra, expect_status, expect_moved):
    out_url, in_url = args.trans_out, args.trans_in
    print("=== %s" % name)
    a0 = account(out_url, args.account)
    b0 = account(in_url, args.account)
    print("before: bank A balance=%d trading_balance=%d; bank B balance=%d trading_balance=%d" % (a0 + b0))

    gid = utils.gen_gid(args.dtm)
    out_body = {"account_id": args.account, "amount": args.amount}
    in_body = dict(out_body, **in_body_extra)

    def branches(t):
        t.call_branch(out_body, out_url + "/TransOutTry", out_url + "/TransOutConfirm", out_url + "/TransOutCancel")
        t.call_branch(in_body, in_url + "/TransInTry", in_url + "/TransInConfirm", in_url + "/TransInCancel")

    if expect_status == "failed":
        print("(dtmcli prints the traceback of the refused Try on stderr: expected)", flush=True)
    returned = tcc.tcc_global_transaction(args.dtm, gid, branches)
    print("dtmcli tcc_global_transaction(gid=%s) returned %r" % (gid, returned))

    record = wait_final(args.dtm, gid, args.timeout)
    print(describe(record))
    a1 = account(out_url, args.account)
    b1 = account(in_url, args.account)
    print("after:  bank A balance=%d trading_balance=%d; bank B balance=%d trading_balance=%d" % (a1 + b1))

    problems = []
    # dtmcli returns the gid after a submit and "" after an abort.
    want_return = gid if expect_status == "succeed" else ""
    if returned != want_return:
        problems.append("tcc_global_transaction returned %r, expected %r" % (returned, want_return))
    t = record.get("transaction") or {}
    if t.get("gid") != gid:
        problems.append("query answered gid %r, expected %r" % (t.get("gid"), gid))
    if t.get("status") != expect_status:
        problems.append("global status %r, expected %r" % (t.get("status"), expect_status))
    check_ops(record, "confirm" if expect_status == "succeed" else "cancel", "succeed", problems)
    moved = args.amount if expect_moved else 0
    if a1[0] - a0[0] != -moved:
        problems.append("bank A balance changed by %d, expected %d" % (a1[0] - a0[0], -moved))
    if b1[0] - b0[0] != moved:
        problems.append("bank B balance changed by %d, expected %d" % (b1[0] - b0[0], moved))
    if a1[1] != a0[1] or b1[1] != b0[1]:
        problems.append("frozen funds left: trading_balance A %d -> %d, B %d -> %d" % (a0[1], a1[1], b0[1], b1[1]))
    if problems:
        raise Mismatch("%s (gid %s):\n  - %s" % (name, gid, "\n  - ".join(problems)))
    print("=> ok: global %s, bank A %+d, bank B %+d\n" % (expect_status, -moved, moved))


def main():
    sys.stdout.reconfigure(line_buffering=True)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtm", default=os.environ.get("DTM_URL", "http://127.0.0.1:36789/api/dtmsvr"))
    p.add_argument("--trans-out", default=os.environ.get("TRANS_OUT_URL", "http://127.0.0.1:8081/api"))
    p.add_argument("--trans-in", default=os.environ.get("TRANS_IN_URL", "http://127.0.0.1:8082/api"))
    p.add_argument("--account", type=int, default=1, help="account id in both banks (default 1)")
    p.add_argument("--amount", type=int, default=30, help="minor units (default 30)")
    p.add_argument("--timeout", type=float, default=30, help="seconds to wait for a final status")
    args = p.parse_args()
    args.dtm, args.trans_out, args.trans_in = (u.rstrip("/") for u in (args.dtm, args.trans_out, args.trans_in))
    print("dtmcli compatibility check: coordinator %s, TransOut %s, TransIn %s" % (args.dtm, args.trans_out, args.trans_in))
    try:
        run(args, "success: TransOut + TransIn, submit", {}, "succeed", True)
        run(args, "rollback: TransIn Try refused, abort", {"fault": {"try": "failure"}}, "failed", False)
    except Mismatch as e:
        print("dtmcli check FAILED: %s" % e, file=sys.stderr)
        return 1
    except Exception as e:  # dtmcli raises plain Exceptions (connection refused, "bad result")
        print("dtmcli check FAILED: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    print("dtmcli check passed: success and rollback behave as DTM's client expects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
