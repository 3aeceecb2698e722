#!/usr/bin/env python3
"""Drives the nats-insights API from another language's client (nats-py), the way a third-party
consumer would: micro discovery on $SRV.PING/INFO/STATS, every $INSIGHTS.API endpoint, and error
replies recognised by their Nats-Service-Error headers.

Usage: api_conformance.py <nats-url> <user> <password>
Exit code 0 when every check passed; otherwise prints what failed and exits 1.
"""

import asyncio
import json
import sys

import nats
from nats.errors import NoRespondersError, TimeoutError as NatsTimeout

SERVICE = "nats-insights"
ENDPOINTS = ["STATUS", "FINDINGS", "CHECKS", "HISTORY", "EXPLAIN", "PREFLIGHT", "GROUP_FORGET"]
# The subject token of each endpoint under $INSIGHTS.API (its name, but GROUP.FORGET).
TOKENS = {n: n.replace("GROUP_", "GROUP.") for n in ENDPOINTS}
ERROR_HEADER = "Nats-Service-Error"
CODE_HEADER = "Nats-Service-Error-Code"

passed = 0
failures = []


def check(condition, what):
    global passed
    if condition:
        passed += 1
    else:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)


async def ask(nc, subject, body=b""):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    return await nc.request(subject, body, timeout=5)


def decode(msg):
    try:
        return json.loads(msg.data)
    except ValueError:
        return None


def error_code(msg):
    headers = msg.headers or {}
    return headers.get(CODE_HEADER)


async def gather(nc, subject, wait=1.0):
    """Scatter-gather: every instance answers a discovery request."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    replies = []
    try:
        while True:
            msg = await sub.next_msg(timeout=wait)
            replies.append(json.loads(msg.data))
    except NatsTimeout:
        pass
    await sub.unsubscribe()
    return replies


async def main(url, user, password):
    nc = await nats.connect(url, user=user, password=password, connect_timeout=5)
    try:
        # Discovery, as `nats micro ls` does it.
        pings = await gather(nc, f"$SRV.PING.{SERVICE}")
        check(len(pings) >= 1, "an instance answers $SRV.PING.nats-insights")
        ours = [p for p in pings if p.get("name") == SERVICE]
        check(ours and ours[0].get("type") == "io.nats.micro.v1.ping_response", f"ping_response type: {pings}")
        all_pings = await gather(nc, "$SRV.PING")
        check(any(p.get("name") == SERVICE for p in all_pings), "found by the all-services $SRV.PING")
        instance_id = ours[0]["id"] if ours else ""

        info = decode(await ask(nc, f"$SRV.INFO.{SERVICE}.{instance_id}"))
        check(info and info.get("type") == "io.nats.micro.v1.info_response", f"info_response: {info}")
        names = sorted(e.get("name") for e in (info or {}).get("endpoints", []))
        check(names == sorted(ENDPOINTS), f"INFO lists every endpoint: {names}")
        subjects = sorted(e.get("subject") for e in (info or {}).get("endpoints", []))
        check(subjects == sorted(f"$INSIGHTS.API.{TOKENS[n]}" for n in ENDPOINTS), f"endpoint subjects: {subjects}")

        # Every endpoint, with the bodies an operator would send.
        requests = {
            "STATUS": [b"", {}],
            "FINDINGS": [b"", {"check": "META_001", "severity": "critical", "include_resolved": True, "limit": 50}],
            "CHECKS": [b""],
            "HISTORY": [b"", {"limit": 10}],
            "EXPLAIN": [{"check": "META_006"}],
            "PREFLIGHT": [{"action": "restart", "server": "n1"}, {"action": "healthy"}],
        }
        for endpoint, bodies in requests.items():
            for body in bodies:
                msg = await ask(nc, f"$INSIGHTS.API.{endpoint}", body)
                reply = decode(msg)
                want = f"io.nats.insights.v1.{endpoint.lower()}_response"
                check(error_code(msg) is None, f"{endpoint} {body!r} is not an error: {msg.headers}")
                check(isinstance(reply, dict) and reply.get("type") == want, f"{endpoint} {body!r} type {want}: {reply}")

        status = decode(await ask(nc, "$INSIGHTS.API.STATUS"))
        check(status.get("status") in ("ok", "warning", "critical", "unknown"), f"status: {status.get('status')}")
        check(status.get("instance") == (ours[0].get("metadata") or {}).get("instance"), "STATUS instance matches the micro metadata")
        check(len(status.get("meta", {}).get("members", [])) >= 3, "STATUS lists the meta members")
        checks = decode(await ask(nc, "$INSIGHTS.API.CHECKS"))
        ids = [c.get("id") for c in checks.get("checks", [])]
        check(ids == ["META_001", "META_002", "META_003", "META_004", "META_005", "META_006", "META_008", "META_101", "META_102", "META_103", "META_104", "META_105", "META_106", "META_107", "META_108", "META_109", "META_110", "CLUSTER_005", "CLUSTER_007", "SERVER_008", "SERVER_014", "SERVER_101"], f"CHECKS catalog: {ids}")
        check(all(c.get("threshold") for c in checks.get("checks", [])), "every check has its threshold in words")

        # Errors are recognisable as such: empty body, both headers, the right code.
        bad = [
            ("FINDINGS", {"check": "META_999"}, "404"),
            ("FINDINGS", {"severity": "fatal"}, "400"),
            ("FINDINGS", {"limit": 0}, "400"),
            ("FINDINGS", {"unknown_field": 1}, "400"),
            ("HISTORY", {"limit": "ten"}, "400"),
            ("EXPLAIN", {"check": "META_404"}, "404"),
            ("STATUS", b"{not json", "400"),
            ("CHECKS", b"[1, 2]", "400"),
            ("STATUS", b" " * (64 * 1024 + 1), "413"),
            # Never forgets a group by accident: an unknown one is refused, none named is malformed.
            ("GROUP.FORGET", {"domain": "nowhere"}, "404"),
            ("GROUP.FORGET", b"", "400"),
        ]
        for endpoint, body, code in bad:
            msg = await ask(nc, f"$INSIGHTS.API.{endpoint}", body)
            headers = msg.headers or {}
            check(error_code(msg) == code, f"{endpoint} {str(body)[:40]} -> {code}, got {headers}")
            check(bool(headers.get(ERROR_HEADER)), f"{endpoint} error has a description")
            check(msg.data == b"", f"{endpoint} error reply has an empty body")

        # The service is still answering after all that, and counted the errors.
        stats = decode(await ask(nc, f"$SRV.STATS.{SERVICE}.{instance_id}"))
        check(stats and stats.get("type") == "io.nats.micro.v1.stats_response", f"stats_response: {stats}")
        by_name = {e.get("name"): e for e in (stats or {}).get("endpoints", [])}
        check(by_name.get("FINDINGS", {}).get("num_errors", 0) >= 4, f"FINDINGS errors counted: {by_name.get('FINDINGS')}")
        check(by_name.get("FINDINGS", {}).get("num_requests", 0) >= 6, "FINDINGS requests counted")
        data = by_name.get("STATUS", {}).get("data") or {}
        check(data.get("polls", 0) >= 1 and "rejected" in data, f"STATUS stats data: {data}")
        check(data.get("rejected", {}).get("413") == 1, f"the oversized request is counted: {data}")
        check(decode(await ask(nc, "$INSIGHTS.API.STATUS")).get("type") == "io.nats.insights.v1.status_response",
              "still answers after bad requests")

        # A subject nobody serves is reported as such by the client, not as a service error.
        try:
            await nc.request("$INSIGHTS.API.NOPE", b"", timeout=2)
            check(False, "no responders expected on an unknown endpoint")
        except (NoRespondersError, NatsTimeout):
            check(True, "unknown endpoint has no responders")
    finally:
        await nc.close()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(*sys.argv[1:]))
    print(f"api_conformance: {passed} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
