"""Schemathesis hooks for the AMP provider (deploy/schemathesis/run.sh).

- Authentication: every operation that needs an API key gets a registered agent's key. The
  operations that end a key's or an agent's life (revoke-key, rotate-key, rotate-keys,
  DELETE /v1/agents/me) get a fresh agent each time, so the shared agent stays usable.
- Signed routes: a generated `POST /v1/route` body whose `subject` is a string (positive
  mode) is turned into a message from the shared agent to a second agent, signed with the
  sender's Ed25519 key over the canonical string of spec 04 (`from|to|subject|priority|
  in_reply_to|payload_hash`), with the generated subject, so the acceptance path, not only
  its validation, is exercised. Other bodies go as generated.
- Federation: `POST /v1/federation/deliver` comes from a configured peer (`peer.fuzz.test`,
  whose key run.sh makes and passes in AMP_FUZZ_PEER_SEED). Every case is signed as the peer
  signs (`X-AMP-Provider`, `X-AMP-Timestamp`, `X-AMP-Signature` over "<ts>.<exact body>"),
  so generated bodies reach the body checks instead of stopping at 401; a positive case is
  replaced by a real federated message (a fresh id, a sender under the peer's domain, signed
  by the sender's key) to the shared recipient, so the acceptance path is exercised.
"""

import atexit
import base64
import collections
import hashlib
import json
import os
import secrets
import sys
import threading
import time

import requests
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

BASE = os.environ["AMP_URL"]
TENANT = "fuzz"
PAYLOAD = {"type": "notification", "message": "schemathesis", "context": {"n": 1}}
PRIORITIES = {"low", "normal", "high", "urgent"}
# Operations after which the caller's key (or the agent) is gone or replaced.
DESTRUCTIVE = {
    ("DELETE", "/v1/auth/revoke-key"),
    ("POST", "/v1/auth/rotate-key"),
    ("POST", "/v1/auth/rotate-keys"),
    ("DELETE", "/v1/agents/me"),
}

_lock = threading.Lock()
_agents = {}


def _public_pem(key):
    """The PEM (SubjectPublicKeyInfo) of an Ed25519 private key's public half."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _register(name):
    key = Ed25519PrivateKey.generate()
    body = {"tenant": TENANT, "name": name, "public_key": _public_pem(key), "key_algorithm": "Ed25519"}
    resp = requests.post(f"{BASE}/v1/register", json=body, timeout=10)
    if resp.status_code != 201:
        raise RuntimeError(f"registration of {name} failed: {resp.status_code} {resp.text}")
    data = resp.json()
    return {"address": data["address"], "api_key": data["api_key"], "key": key}


def _shared(role):
    with _lock:
        if role not in _agents:
            _agents[role] = _register(f"{role}-{secrets.token_hex(4)}")
        return _agents[role]


def _sender_key():
    """The shared sender's key, checked first: should any request have ended it (the hooks
    give those operations agents of their own), say so and register another."""
    agent = _shared("sender")
    me = requests.get(
        f"{BASE}/v1/agents/me", headers={"Authorization": f"Bearer {agent['api_key']}"}, timeout=10
    )
    if me.status_code == 401:
        print(f"hooks: the shared sender's key stopped working: {me.text}", file=sys.stderr)
        with _lock:
            _agents["sender"] = _register(f"sender-{secrets.token_hex(4)}")
        return _agents["sender"]["api_key"]
    return agent["api_key"]


def _operation(case):
    return (case.operation.method.upper(), case.operation.path)


@schemathesis.auth(refresh_interval=None)
class AgentKey:
    """The Bearer API key of a registered agent."""

    def get(self, case, ctx):
        if _operation(case) in DESTRUCTIVE:
            return _register(f"once-{secrets.token_hex(6)}")["api_key"]
        return _sender_key()

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def _payload_hash(payload):
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _message_signature(key, sender, recipient, subject, priority):
    """The sender's signature (base64) of spec 04's canonical string for PAYLOAD, no reply."""
    canonical = "|".join([sender, recipient, subject, priority, "", _payload_hash(PAYLOAD)])
    return base64.b64encode(key.sign(canonical.encode())).decode()


def _signed(subject, priority):
    sender = _shared("sender")
    recipient = _shared("recipient")
    signature = _message_signature(sender["key"], sender["address"], recipient["address"], subject, priority)
    return {
        "from": sender["address"],
        "to": recipient["address"],
        "subject": subject,
        "priority": priority,
        "payload": PAYLOAD,
        "signature": signature,
    }


def _negative(case):
    return case.meta is not None and str(case.meta.generation.mode).lower().endswith("negative")


def _pem():
    return _public_pem(Ed25519PrivateKey.generate())


PEER = "peer.fuzz.test"
_PEER_SEED = os.environ.get("AMP_FUZZ_PEER_SEED", "")
PEER_KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(_PEER_SEED)) if _PEER_SEED else None
DELIVER = ("POST", "/v1/federation/deliver")
_fed_sender = Ed25519PrivateKey.generate()


def _federated(subject, priority):
    """A message from an agent of the peer to the shared recipient, as a peer forwards it."""
    recipient = _shared("recipient")
    sender = f"fuzzer@team.{PEER}"
    now = time.time()
    msg_id = f"msg_{int(now * 1000)}_{secrets.token_hex(6)}"
    envelope = {
        "version": "amp/0.1",
        "id": msg_id,
        "from": sender,
        "to": recipient["address"],
        "subject": subject,
        "priority": priority,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z",
        "signature": _message_signature(_fed_sender, sender, recipient["address"], subject, priority),
        "thread_id": msg_id,
    }
    return {"envelope": envelope, "payload": PAYLOAD, "sender_public_key": _public_pem(_fed_sender)}


def _sign_as_peer(case):
    """Signs the body with the peer's key at the current time. The body stays as generated
    (a bytes body would be re-classified as schema-violating): the signature covers the bytes
    `requests` makes of it (`json.dumps(body, allow_nan=False)`, UTF-8)."""
    if PEER_KEY is None or not isinstance(case.body, (dict, list, str, int, float, bool)):
        return
    try:
        raw = json.dumps(case.body, allow_nan=False).encode()
    except (TypeError, ValueError):
        return
    ts = str(int(time.time()))
    signature = base64.b64encode(PEER_KEY.sign(ts.encode() + b"." + raw)).decode()
    case.headers = case.headers or {}
    case.headers.update(
        {
            "Content-Type": "application/json",
            "X-AMP-Provider": PEER,
            "X-AMP-Timestamp": ts,
            "X-AMP-Signature": signature,
        }
    )
    for name in list(case.headers):
        # Generated spellings of the same headers would be sent too.
        if name.lower().startswith("x-amp-") and name not in ("X-AMP-Provider", "X-AMP-Timestamp", "X-AMP-Signature"):
            del case.headers[name]


@schemathesis.hook
def map_case(ctx, case):
    op = _operation(case)
    if _negative(case) or not isinstance(case.body, dict):
        pass
    elif op == ("POST", "/v1/route"):
        # Any positive body becomes a signed message with the generated subject, priority and
        # options (the signature covers from, to, subject, priority, in_reply_to, payload).
        body = case.body
        subject = body.get("subject") if isinstance(body.get("subject"), str) else "hello"
        priority = body.get("priority") if body.get("priority") in PRIORITIES else "normal"
        signed = _signed(subject, priority)
        if isinstance(body.get("options"), dict):
            signed["options"] = body["options"]
        case.body = signed
    elif op == DELIVER:
        # A real federated message; the generated subject and priority when usable.
        body = case.body
        envelope = body.get("envelope") if isinstance(body.get("envelope"), dict) else {}
        subject = envelope.get("subject") if isinstance(envelope.get("subject"), str) else "hello"
        priority = envelope.get("priority") if envelope.get("priority") in PRIORITIES else "normal"
        case.body = _federated(subject[:200], priority)
    elif op == ("POST", "/v1/register"):
        # A real key and a free name in the test tenant; the other fields as generated.
        case.body.update(
            tenant=TENANT,
            name=f"reg-{secrets.token_hex(6)}",
            public_key=_pem(),
            key_algorithm="Ed25519",
        )
    return case


def _integers(value):
    """Integral floats (`5.0`) as integers: JSON Schema's `integer` admits them, the API's
    parser (serde) does not, and says so with 400 (README, Protocol decisions)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers(v) for v in value]
    return value


@schemathesis.hook
def before_call(ctx, case, kwargs):
    # Every phase's requests pass here (map_case sees only generated ones).
    if isinstance(case.body, (dict, list)):
        case.body = _integers(case.body)
    # Federation: signed by the peer at send time (a fresh signature each call: a replayed
    # one is refused, as it must be).
    if _operation(case) == DELIVER:
        _sign_as_peer(case)
    # Long-poll for at most a second: the run explores, it does not wait.
    if case.operation.path in ("/v1/messages/pending", "/v1/inbox") and isinstance(case.query, dict):
        wait = case.query.get("wait")
        if isinstance(wait, str) and wait.isdigit():
            wait = int(wait)
        if isinstance(wait, int) and not isinstance(wait, bool) and wait > 1:
            case.query["wait"] = 1


# What federation deliveries were answered, printed at the end: the run shows that the signed
# cases got past authentication (200 accepted, 4xx from the body checks), not only 401.
_deliver_statuses = collections.Counter()


@schemathesis.hook
def after_call(ctx, case, response):
    if _operation(case) == DELIVER:
        with _lock:
            _deliver_statuses[response.status_code] += 1


@atexit.register
def _report_deliveries():
    if _deliver_statuses:
        counts = ", ".join(f"{n}x {code}" for code, n in sorted(_deliver_statuses.items()))
        print(f"hooks: POST /v1/federation/deliver answered {counts}", file=sys.stderr)
