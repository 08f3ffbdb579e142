"""Pure builders of libnftables JSON (see libnftables-json(5)).

Values (interface names, addresses) travel as JSON strings and numbers, never
as text pasted into nft syntax, so no value can turn into another command.
Callers pass only validated values anyway.
"""

from __future__ import annotations

# typing costs milliseconds to import and these names only serve type
# checkers (annotations are not evaluated: PEP 563).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Json = dict[str, Any]
else:
    Json = dict

ACCEPT: Json = {"accept": None}
DROP: Json = {"drop": None}
COUNTER: Json = {"counter": None}
MASQUERADE: Json = {"masquerade": None}


# --- objects ---


def table(family: str, name: str) -> Json:
    return {"table": {"family": family, "name": name}}


def set_(family: str, table_: str, name: str, type_: str | list[str]) -> Json:
    return {"set": {"family": family, "table": table_, "name": name, "type": type_}}


def chain(
    family: str,
    table_: str,
    name: str,
    *,
    type_: str | None = None,
    hook: str | None = None,
    prio: int | None = None,
    policy: str | None = None,
) -> Json:
    body: dict[str, Any] = {"family": family, "table": table_, "name": name}
    if hook is not None:
        body.update(type=type_, hook=hook, prio=prio, policy=policy)
    return {"chain": body}


def rule(family: str, table_: str, chain_: str, *expr: Json) -> Json:
    return {"rule": {"family": family, "table": table_, "chain": chain_, "expr": list(expr)}}


def elements(family: str, table_: str, set_name: str, elems: list[Any]) -> Json:
    return {"element": {"family": family, "table": table_, "name": set_name, "elem": elems}}


def flowtable(family: str, table_: str, name: str, devices: list[str], *, prio: int = 0) -> Json:
    return {
        "flowtable": {
            "family": family,
            "table": table_,
            "name": name,
            "hook": "ingress",
            "prio": prio,
            "dev": devices,
        }
    }


# --- commands ---


def add(obj: Json) -> Json:
    return {"add": obj}


def delete(obj: Json) -> Json:
    return {"delete": obj}


# --- expressions and statements ---


def meta(key: str) -> Json:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def ct(key: str) -> Json:
    return {"ct": {"key": key}}


def concat(*items: Any) -> Json:
    return {"concat": list(items)}


def prefix(addr: str, length: int) -> Json:
    return {"prefix": {"addr": addr, "len": length}}


def anon_set(*items: Any) -> Json:
    return {"set": list(items)}


def match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def goto(target: str) -> Json:
    return {"goto": {"target": target}}


def jump(target: str) -> Json:
    return {"jump": {"target": target}}


def reject(type_: str, code: str) -> Json:
    return {"reject": {"type": type_, "expr": code}}


def reject_tcp_reset() -> Json:
    return {"reject": {"type": "tcp reset"}}


def dnat(addr: str) -> Json:
    return {"dnat": {"addr": addr}}


def mangle(key: Json, value: Any) -> Json:
    return {"mangle": {"key": key, "value": value}}


def fwd(dev: str) -> Json:
    return {"fwd": {"dev": dev}}


def flow_add(flowtable_name: str) -> Json:
    return {"flow": {"op": "add", "flowtable": f"@{flowtable_name}"}}


def transaction(commands: list[Json]) -> Json:
    return {"nftables": commands}
