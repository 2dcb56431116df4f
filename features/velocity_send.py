"""Running the velocity scripts: pipelined on one Redis, or routed per slot on a cluster.

``run_on_redis`` writes every script of an update on one connection and reads the
replies (loading the script on ``NOSCRIPT``). On Redis Cluster every script of
``features.push.VelocityUpdater`` touches one slot (the state is a field of the card's
Feast hash, chunks never span slots), so it runs atomically on the master of that slot:
``run_on_cluster`` writes the scripts to every master before any reply is read; ``MOVED``
patches the slot map and resends, ``ASK`` resends after ``ASKING``, ``NOSCRIPT`` loads the
script on that node and resends. A node that cannot be reached loses only its own
scripts: they are reported as failed (not retried: a script may have run before the
connection broke; with offsets given a later retry is safe, the watermarks skip what ran).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import redis

from features.cluster import ClusterMap, parse_redirect
from features.fanout import ASKING

__all__ = ["ScriptOutcome", "run_on_cluster", "run_on_redis"]

log = logging.getLogger(__name__)


@dataclass
class ScriptOutcome:
    """What the scripts of one update did: cards and events skipped (from the script's
    replies), and the events of the scripts that failed, with the first error."""

    cards: int = 0
    skipped: int = 0
    failed_events: int = 0
    errors: list[str] = field(default_factory=list)


# one pending script: (slot, RESP bytes, events it carries, node it was ASKed to or -1)
_Item = tuple[int, bytes, int, int]


def run_on_cluster(
    cmap: ClusterMap, commands: list[tuple[int, bytes, int]], script: str
) -> ScriptOutcome:
    """Run ``commands`` ((slot, EVALSHA bytes, events)) on their masters."""
    out = ScriptOutcome()
    if cmap.stale:
        cmap.refresh()
    pending: list[_Item] = [(slot, cmd, n, -1) for slot, cmd, n in commands]
    for _ in range(5):
        if not pending:
            break
        by_node: dict[int, list[_Item]] = {}
        for item in pending:
            node = item[3] if item[3] >= 0 else int(cmap.owner[item[0]])
            by_node.setdefault(node, []).append(item)
        sent = []
        for node, items in by_node.items():
            if node < 0 or not cmap.nodes[node].breaker.allow():
                cmap.stale = True  # a failover under way: ask again on the next update
                _lost(out, items, "no reachable master for the slot")
                continue
            try:
                conn = cmap.nodes[node].connection()
                conn.send_packed_command([ASKING + c if a >= 0 else c for _, c, _, a in items])
            except (OSError, redis.RedisError) as exc:
                _node_failed(cmap, node, out, items, exc)
                continue
            sent.append((node, conn, items))
        pending = []
        for node, conn, items in sent:
            load = False
            for k, item in enumerate(items):
                try:
                    if item[3] >= 0:
                        conn.read_response()  # the OK of ASKING
                    reply = conn.read_response()
                except redis.exceptions.NoScriptError:
                    load = True
                    pending.append((item[0], item[1], item[2], item[3]))
                    continue
                except redis.ResponseError as exc:
                    moved = parse_redirect(str(exc))
                    if moved is None:
                        _lost(out, [item], str(exc))
                        continue
                    kind, slot, addr = moved
                    target = cmap.node(addr)
                    if kind == "MOVED":
                        cmap.owner[slot] = target
                        cmap.stale = True
                    pending.append((item[0], item[1], item[2], target if kind == "ASK" else -1))
                    continue
                except (OSError, redis.ConnectionError, redis.TimeoutError) as exc:
                    _node_failed(cmap, node, out, items[k:], exc)
                    break
                out.cards += int(reply[0])
                out.skipped += int(reply[1])
            else:
                cmap.nodes[node].breaker.record_success()
            if load:
                try:
                    cmap.nodes[node].call("SCRIPT", "LOAD", script)
                except (OSError, redis.RedisError) as exc:
                    log.warning("SCRIPT LOAD on %s failed: %s", cmap.nodes[node].addr, exc)
    _lost(out, pending, "redirects did not settle")
    return out


def _lost(out: ScriptOutcome, items: list[_Item], why: str) -> None:
    if items:
        out.failed_events += sum(i[2] for i in items)
        out.errors.append(why)


def _node_failed(
    cmap: ClusterMap, node: int, out: ScriptOutcome, items: list[_Item], exc: BaseException
) -> None:
    n = cmap.nodes[node]
    n.reset()  # unread replies may be in flight
    n.breaker.record_failure()
    cmap.stale = True
    _lost(out, items, f"{n.addr}: {exc}")


def run_on_redis(conn: Any, pending: list[bytes], script: str) -> tuple[int, int]:
    """Send the EVALSHAs at once on ``conn``; SCRIPT LOAD and resend those Redis lacks.

    Every reply is read before raising the first error, so the connection stays in step.
    """
    cards = skipped = 0
    failed: list[bytes] = []
    for attempt in range(2):
        conn.send_packed_command(pending)
        failed, error = [], None
        for command in pending:
            try:
                reply = conn.read_response()
            except redis.exceptions.NoScriptError:
                failed.append(command)
                continue
            except redis.ResponseError as exc:  # read on: stay in step
                error = error or exc
                continue
            if isinstance(reply, list):
                cards += int(reply[0])
                skipped += int(reply[1])
            else:  # an older script's reply: its card count
                cards += int(reply)
        if error is not None:
            raise error
        if not failed or attempt:
            break
        conn.send_command("SCRIPT", "LOAD", script)
        conn.read_response()
        pending = failed
    if failed:
        raise redis.ResponseError("velocity script missing after SCRIPT LOAD")
    return cards, skipped
