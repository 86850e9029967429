"""Schemathesis hooks for the admin API (deploy/schemathesis/run.sh, SCHEMATHESIS_DOC=admin).

- Authentication: every operation gets the bootstrap operator token (scope `full`, from
  AMP_OPERATOR_TOKEN), so every operation gets past the scope check; the scopes themselves are
  held to the document by the ampd test `openapi_admin_scopes_are_the_ones_enforced`.
- Real objects: a tenant `fuzz` (open registration) with one agent exists before the run; half
  of the positive cases that name a tenant (and an agent) name these, so the answers of
  existing objects are checked too, not only 404s. The operations that end them (tenant
  deletion, agent deregistration, key revocation) keep their generated names.
- The run's token is never revoked: the stateful phase finds its id in `GET /admin/v1/tokens`
  and follows it to `POST /admin/v1/tokens/{id}/revoke`, which then revokes a throwaway token.
- The shared tenant is never deleted: its deletion deletes a throwaway tenant instead; the
  stateful phase's cases are left as generated (they follow links between the answers).
- Integral floats as integers, as in the public hooks.
"""

import os
import random
import secrets
import threading

import requests
import schemathesis

TENANT = os.environ.get("AMP_FUZZ_TENANT", "fuzz")
AGENT = os.environ.get("AMP_FUZZ_AGENT", "")
BASE = os.environ.get("AMP_ADMIN_URL", "")
TOKEN = os.environ.get("AMP_OPERATOR_TOKEN", "")
REVOKE_TOKEN = ("POST", "/admin/v1/tokens/{id}/revoke")
_lock = threading.Lock()
_own_id = []


def _headers():
    return {"Authorization": f"Bearer {TOKEN}"}


def _token_in_use_id():
    """The public id of the token the run authenticates with (listed by the API, so the
    stateful phase can find it and revoke it: `before_call` keeps it alive)."""
    with _lock:
        if not _own_id:
            listed = requests.get(f"{BASE}/admin/v1/tokens", headers=_headers(), timeout=10).json()
            _own_id.extend(t["id"] for t in listed["tokens"] if t["name"] == "bootstrap")
        return _own_id[0] if _own_id else None


def _throwaway_token_id():
    body = {"name": f"throwaway {secrets.token_hex(4)}", "scope": "read"}
    resp = requests.post(f"{BASE}/admin/v1/tokens", json=body, headers=_headers(), timeout=10)
    resp.raise_for_status()
    return resp.json()["id"]


# Operations that end the shared tenant or agent: never pointed at them.
ENDING = {
    ("DELETE", "/admin/v1/tenants/{name}"),
    ("DELETE", "/admin/v1/tenants/{name}/agents/{agent}"),
    ("POST", "/admin/v1/tenants/{name}/agents/{agent}/revoke-key"),
}


@schemathesis.auth(refresh_interval=None)
class OperatorToken:
    """The bootstrap operator token."""

    def get(self, case, ctx):
        return TOKEN

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


def _negative(case):
    return case.meta is not None and str(case.meta.generation.mode).lower().endswith("negative")


def _stateful(case):
    phase = getattr(getattr(case.meta, "phase", None), "name", "")
    return "stateful" in str(phase).lower()


def _throwaway_tenant():
    body = {"name": f"gone-{secrets.token_hex(4)}"}
    resp = requests.post(f"{BASE}/admin/v1/tenants", json=body, headers=_headers(), timeout=10)
    resp.raise_for_status()
    return body["name"]


@schemathesis.hook
def map_case(ctx, case):
    op = (case.operation.method.upper(), case.operation.path)
    params = case.path_parameters
    # Stateful cases follow links (a tenant just created, then used): left as they are.
    if _negative(case) or _stateful(case) or op in ENDING or not isinstance(params, dict) or "name" not in params:
        return case
    if random.random() < 0.5:
        params["name"] = TENANT
        if "agent" in params and AGENT:
            params["agent"] = AGENT
    return case


def _integers(value):
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
    # The run's own token is never revoked: a revocation of it revokes a throwaway instead.
    # And the shared tenant is never deleted (the stateful phase finds it in the listing).
    params = case.path_parameters
    if (case.operation.method.upper(), case.operation.path) == ("DELETE", "/admin/v1/tenants/{name}") and isinstance(params, dict):
        if str(params.get("name", "")).strip().lower() == TENANT:
            params["name"] = _throwaway_tenant()
    if (case.operation.method.upper(), case.operation.path) == REVOKE_TOKEN and isinstance(params, dict):
        if params.get("id") == _token_in_use_id():
            params["id"] = _throwaway_token_id()
