"""A realistic workflow: Python workers under a SWITCH, a FORK_JOIN, a DO_WHILE and a sub-workflow.

    python samples/order_workflow.py [--orders 20] [--concurrency 4]

An order is validated; a SWITCH picks the express or the standard label; a FORK_JOIN charges the
payment while it reserves the stock; a DO_WHILE packs each item (its ``items`` form with the
condition ``true``, so LocalConductor needs no script engine); a sub-workflow notifies the customer. Every task that does work is a Python
worker. Runs on the embedded ``LocalConductor`` by default, or on ``CONDUCTOR_SERVER_URL`` when it
is set. Exits 0 when every order completed with the expected output.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List

from _common import conductor_client
from conductor_workers import (
    PollingOptions,
    TaskDef,
    TaskManager,
    WorkflowDef,
    WorkflowExecutor,
    WorkflowStatus,
    worker_task,
)

WORKFLOW = "cw_order"
NOTIFY = "cw_order_notify"


@worker_task("cw_order_validate")
def validate(order_id: int, items: List[str], express: bool) -> dict:
    return {"order_id": order_id, "items": items, "shipping": "express" if express else "standard"}


@worker_task("cw_order_express_label")
def express_label(order_id: int) -> dict:
    return {"label": f"EXP-{order_id}"}


@worker_task("cw_order_standard_label")
def standard_label(order_id: int) -> dict:
    return {"label": f"STD-{order_id}"}


@worker_task("cw_order_charge")
def charge(order_id: int, amount: int) -> dict:
    return {"charge_id": f"ch-{order_id}", "amount": amount}


@worker_task("cw_order_reserve")
def reserve(items: List[str]) -> dict:
    return {"reserved": len(items)}


@worker_task("cw_order_pack")
def pack(item: str, index: int) -> dict:
    return {"box": f"{index}:{item}"}


@worker_task("cw_order_email")
def email(order_id: int, express: "str | None" = None, standard: "str | None" = None) -> dict:
    """Only the SWITCH's chosen branch ran: the other label is null."""
    return {"sent": f"order {order_id} ships with {express or standard}"}


WORKERS = [validate, express_label, standard_label, charge, reserve, pack, email]


def simple(name: str, ref: str, **inputs: Any) -> Dict[str, Any]:
    return {"name": name, "taskReferenceName": ref, "type": "SIMPLE", "inputParameters": inputs}


def notify_def() -> WorkflowDef:
    return WorkflowDef.from_json({
        "name": NOTIFY, "version": 1,
        "tasks": [simple("cw_order_email", "email", order_id="${workflow.input.order_id}",
                         express="${workflow.input.express}", standard="${workflow.input.standard}")],
        "outputParameters": {"sent": "${email.output.sent}"},
    })


def order_def() -> WorkflowDef:
    order_id = "${validate.output.order_id}"
    return WorkflowDef.from_json({
        "name": WORKFLOW, "version": 1,
        "tasks": [
            simple("cw_order_validate", "validate", order_id="${workflow.input.order_id}",
                   items="${workflow.input.items}", express="${workflow.input.express}"),
            {"name": "shipping", "taskReferenceName": "shipping", "type": "SWITCH",
             "evaluatorType": "value-param", "expression": "how",
             "inputParameters": {"how": "${validate.output.shipping}"},
             "decisionCases": {"express": [simple("cw_order_express_label", "express_label", order_id=order_id)]},
             "defaultCase": [simple("cw_order_standard_label", "standard_label", order_id=order_id)]},
            {"name": "pay_and_reserve", "taskReferenceName": "pay_and_reserve", "type": "FORK_JOIN",
             "forkTasks": [[simple("cw_order_charge", "charge", order_id=order_id,
                                   amount="${workflow.input.amount}")],
                           [simple("cw_order_reserve", "reserve", items="${validate.output.items}")]]},
            {"name": "joined", "taskReferenceName": "joined", "type": "JOIN", "joinOn": ["charge", "reserve"]},
            {"name": "pack_items", "taskReferenceName": "pack_items", "type": "DO_WHILE",
             "items": "${validate.output.items}", "loopCondition": "true",  # no script: items decide
             "loopOver": [simple("cw_order_pack", "pack", item="${pack_items.output.loopItem}",
                                 index="${pack_items.output.loopIndex}")]},
            {"name": "notify", "taskReferenceName": "notify", "type": "SUB_WORKFLOW",
             "subWorkflowParam": {"name": NOTIFY, "version": 1},
             "inputParameters": {"order_id": order_id, "express": "${express_label.output.label}",
                                 "standard": "${standard_label.output.label}"}},
        ],
        "outputParameters": {
            "charge": "${joined.output.charge.charge_id}", "reserved": "${joined.output.reserve.reserved}",
            "packed": "${pack_items.output.iteration}", "sent": "${notify.output.sent}",
        },
    })


def expected(order_id: int, items: List[str], express: bool) -> Dict[str, Any]:
    label = ("EXP-%d" if express else "STD-%d") % order_id
    return {"charge": f"ch-{order_id}", "reserved": len(items), "packed": len(items),
            "sent": f"order {order_id} ships with {label}"}


def main(argv: "list[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=20, help="orders to run (default 20)")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker (default 4)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for them all")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    orders = [(n, ["book", "pen", "mug"][: n % 3 + 1], n % 2 == 0) for n in range(1, args.orders + 1)]
    with conductor_client(args.verbose) as client:
        client.metadata.register_task_defs(
            [TaskDef(name=w.task_def_name, retry_count=1, retry_delay_seconds=1, response_timeout_seconds=30)
             for w in WORKERS])
        executor = WorkflowExecutor(client)
        executor.register_workflow(notify_def(), overwrite=True)
        executor.register_workflow(order_def(), overwrite=True)
        manager = TaskManager(client, WORKERS, options=PollingOptions(concurrency=args.concurrency))
        manager.start_polling()
        try:
            started = time.monotonic()
            ids = [executor.start_workflow(WORKFLOW, {"order_id": n, "items": items, "express": express,
                                                      "amount": 10 * n}, version=1)
                   for n, items, express in orders]
            deadline = started + args.timeout
            results = [executor.wait_for_workflow(wf_id, timeout=max(0.1, deadline - time.monotonic()))
                       for wf_id in ids]
            elapsed = time.monotonic() - started
        finally:
            drained = manager.stop_polling(timeout=30)

    good = [wf for wf, (n, items, express) in zip(results, orders)
            if wf.status is WorkflowStatus.COMPLETED and wf.output == expected(n, items, express)]
    for wf in results[:2]:
        print(f"{wf.workflow_id}: {wf.status} {wf.output}")
    for wf, order in zip(results, orders):
        if wf not in good:
            print(f"order {order[0]}: {wf.status} {wf.output} {wf.reason_for_incompletion or ''}")
    print(f"{len(good)}/{len(orders)} orders completed correctly in {elapsed:.2f}s; workers drained: {drained}")
    return 0 if len(good) == len(orders) and drained else 1


if __name__ == "__main__":
    sys.exit(main())
