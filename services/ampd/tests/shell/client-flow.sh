#!/usr/bin/env bash
# Drives an AMP provider exactly as the public shell client (the Claude Code plugin's
# amp-register / amp-send / amp-fetch / amp-reply scripts) does, with curl, openssl and jq
# only. See /work/shared/SPEC-CHECKLIST.md Part 3 (rows P1, P5-P8; 3.2 signing).
#
# Usage: client-flow.sh <base_url> <workdir>
#   base_url  the provider's base URL, without /v1 (e.g. http://127.0.0.1:8080)
#   workdir   an empty scratch directory (keys, request and response bodies)
#
# Prints OK on success; any failure exits non-zero with a message on stderr.

set -euo pipefail

fail() {
  echo "client-flow: FAIL: $*" >&2
  exit 1
}

[ $# -eq 2 ] || fail "usage: $0 <base_url> <workdir>"
BASE="${1%/}"
WORK="$2"
mkdir -p "$WORK"
cd "$WORK"

for tool in curl openssl jq od head date base64; do
  command -v "$tool" >/dev/null 2>&1 || fail "required tool '$tool' is not installed"
done

# curl with the plugin's timeouts; writes the body to $1, prints the HTTP status.
# The remaining arguments go to curl.
http() {
  local out="$1"
  shift
  # On a transport error curl still prints 000 for %{http_code}.
  curl -sS --connect-timeout 5 --max-time 15 -o "$out" -w '%{http_code}' "$@" || true
}

# Shows a response body for a failure message.
body_of() { head -c 2000 "$1" 2>/dev/null || true; }

# ---------------------------------------------------------------------------------------------
# 1. Keys (amp-helper generate_keypair).
# ---------------------------------------------------------------------------------------------
for who in alice bob; do
  mkdir -p "$who"
  openssl genpkey -algorithm Ed25519 -out "$who/private.pem" 2>/dev/null ||
    fail "openssl genpkey failed for $who"
  chmod 600 "$who/private.pem"
  openssl pkey -in "$who/private.pem" -pubout -out "$who/public.pem" ||
    fail "openssl pkey -pubout failed for $who"
done

# ---------------------------------------------------------------------------------------------
# 2. Registration (amp-register legacy form, row P1).
# ---------------------------------------------------------------------------------------------
TENANT="acme"
register() {
  local who="$1" body status
  # $(cat public.pem): the PEM without its trailing newline, as the plugin sends it.
  body=$(jq -n --arg name "$who" --arg tenant "$TENANT" --arg pk "$(cat "$who/public.pem")" \
    '{name: $name, tenant: $tenant, public_key: $pk, key_algorithm: "Ed25519"}')
  status=$(http "$who/register.json" -X POST -H "Content-Type: application/json" \
    -d "$body" "$BASE/v1/register")
  case "$status" in
    200 | 201) ;;
    *) fail "register $who: HTTP $status: $(body_of "$who/register.json")" ;;
  esac
  local key address route
  key=$(jq -r '.api_key // .apiKey // empty' "$who/register.json")
  address=$(jq -r '.address // empty' "$who/register.json")
  route=$(jq -r '.provider.route_url // empty' "$who/register.json")
  [ -n "$key" ] || fail "register $who: no api_key in $(body_of "$who/register.json")"
  [ -n "$address" ] || fail "register $who: no address in $(body_of "$who/register.json")"
  [ -n "$route" ] || fail "register $who: no provider.route_url in $(body_of "$who/register.json")"
  printf '%s' "$key" >"$who/api_key"
  printf '%s' "$address" >"$who/address"
  printf '%s' "$route" >"$who/route_url"
}
register alice
register bob

ALICE_KEY=$(cat alice/api_key)
BOB_KEY=$(cat bob/api_key)
ALICE_ADDR=$(cat alice/address)
BOB_ADDR=$(cat bob/address)
ALICE_ROUTE=$(cat alice/route_url)
[ "$ALICE_ADDR" = "alice@$TENANT.example.test" ] || fail "alice's address is $ALICE_ADDR"
[ "$BOB_ADDR" = "bob@$TENANT.example.test" ] || fail "bob's address is $BOB_ADDR"
[ "$ALICE_ROUTE" = "$BASE/v1/route" ] || fail "route_url is $ALICE_ROUTE, expected $BASE/v1/route"

# ---------------------------------------------------------------------------------------------
# Signing helpers (SPEC-CHECKLIST 3.2).
# ---------------------------------------------------------------------------------------------
# msg_<unix millis>_<8 lowercase hex>.
generate_message_id() {
  echo "msg_$(date +%s%3N)_$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
}

# Payload hash of the message JSON in file $1.
payload_hash() {
  jq -cS '.payload' "$1" | tr -d '\n' | openssl dgst -sha256 -binary | base64 | tr -d '\n'
}

# Signs the string $2 with the private key $1; prints standard base64 without newlines.
sign() {
  local key="$1" data="$2"
  echo -n "$data" >sign.tmp
  openssl pkeyutl -sign -inkey "$key" -rawin -in sign.tmp -out sign.sig ||
    fail "openssl pkeyutl -sign failed"
  base64 <sign.sig | tr -d '\n'
}

# Verifies a received item (file $1, one element of messages[]) against the PEM $2, as
# amp-fetch does: canonical string rebuilt from .envelope.*, payload hashed with jq -cS.
verify_item() {
  local item="$1" pub="$2"
  local from to subj prio reply hash sig
  from=$(jq -r '.envelope.from' "$item")
  to=$(jq -r '.envelope.to' "$item")
  subj=$(jq -r '.envelope.subject' "$item")
  prio=$(jq -r '.envelope.priority // "normal"' "$item")
  reply=$(jq -r '.envelope.in_reply_to // ""' "$item")
  sig=$(jq -r '.envelope.signature' "$item")
  hash=$(payload_hash "$item")
  echo -n "$from|$to|$subj|$prio|$reply|$hash" >verify.msg
  echo -n "$sig" | base64 -d >verify.sig 2>/dev/null || return 1
  openssl pkeyutl -verify -pubin -inkey "$pub" -rawin -in verify.msg -sigfile verify.sig \
    >/dev/null 2>&1
}

# Sends the message JSON in file $1 as the envelope body to URL $2 with API key $3; writes
# the response to $4 and prints the HTTP status.
post_envelope() {
  http "$4" -X POST -H "Content-Type: application/json" -H "Authorization: Bearer $3" \
    --data-binary "@$1" "$2"
}

# ---------------------------------------------------------------------------------------------
# 3. alice -> bob on the external (envelope) path (amp-send, row P5).
# ---------------------------------------------------------------------------------------------
MSG_ID=$(generate_message_id)
[[ "$MSG_ID" =~ ^msg_[0-9]+_[a-f0-9]{8}$ ]] || fail "generated id $MSG_ID is malformed"
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EXPIRES=$(date -u -d '+7 days' +%Y-%m-%dT%H:%M:%SZ)
SUBJECT="Hello Bob"
# The payload exactly as typed: jq -cS re-formats its numbers (1.0 -> 1, 1e3 -> 1000) for the
# hash, while the provider receives (and must hash, and return) the literal text.
PAYLOAD='{"type":"request","message":"Can you review PR #42? Café ☕","context":{"ratio":1.0,"budget":1e3,"retries":3,"nested":{"z":[1.50,"x",null],"a":{"ok":true}}}}'
jq -n --arg id "$MSG_ID" --arg from "$ALICE_ADDR" --arg to "$BOB_ADDR" \
  --arg subject "$SUBJECT" --arg ts "$NOW" --arg exp "$EXPIRES" \
  '{version: "amp/0.1", id: $id, from: $from, to: $to, subject: $subject,
    priority: "normal", timestamp: $ts, thread_id: $id, in_reply_to: null,
    expires_at: $exp, signature: ""}' >envelope.json
# {"envelope": …, "payload": <literal>}: the payload text is not round-tripped through jq.
printf '{"envelope":%s,"payload":%s}' "$(jq -c . envelope.json)" "$PAYLOAD" >message.json
jq -e . message.json >/dev/null || fail "built an invalid message.json"

HASH=$(payload_hash message.json)
S_FROM="$ALICE_ADDR"
S_TO=$(jq -r '.envelope.to' message.json)
S_SUBJ=$(jq -r '.envelope.subject' message.json)
S_PRIO=$(jq -r '.envelope.priority // "normal"' message.json)
S_REPLY=$(jq -r '.envelope.in_reply_to // ""' message.json)
SIG=$(sign alice/private.pem "$S_FROM|$S_TO|$S_SUBJ|$S_PRIO|$S_REPLY|$HASH")
[ "${#SIG}" -eq 88 ] || fail "signature is ${#SIG} characters, expected 88"
# Put the signature into the envelope, keeping the payload text as it was.
printf '{"envelope":%s,"payload":%s}' \
  "$(jq -c --arg sig "$SIG" '.signature = $sig' envelope.json)" "$PAYLOAD" >message.json

status=$(post_envelope message.json "$ALICE_ROUTE" "$ALICE_KEY" send.json)
case "$status" in
  200 | 201 | 202) ;;
  *) fail "send alice->bob: HTTP $status: $(jq -r '.error // .message // empty' send.json 2>/dev/null) $(body_of send.json)" ;;
esac
SEND_STATUS=$(jq -r '.status // "queued"' send.json)
[ -n "$SEND_STATUS" ] || fail "send alice->bob: empty status"

# ---------------------------------------------------------------------------------------------
# 4. bob fetches (amp-fetch external mode, rows P7, P8).
# ---------------------------------------------------------------------------------------------
fetch_external() { # $1 api key, $2 output file; fails unless 200
  local st
  st=$(http "$2" -H "Authorization: Bearer $1" -H "Accept: application/json" "$BASE/v1/inbox")
  [ "$st" = "200" ] || fail "GET /v1/inbox: HTTP $st: $(body_of "$2")"
  jq -e '.messages | type == "array"' "$2" >/dev/null || fail "no messages[] in $(body_of "$2")"
}

fetch_external "$BOB_KEY" inbox1.json
COUNT=$(jq '.messages | length' inbox1.json)
[ "$COUNT" -eq 1 ] || fail "bob's inbox has $COUNT messages, expected 1: $(body_of inbox1.json)"
jq -c '.messages[0]' inbox1.json >item1.json
GOT_ID=$(jq -r '.envelope.id // .id' item1.json)
[[ "$GOT_ID" =~ ^msg_[0-9]+_[a-f0-9]+$ ]] || fail "received id '$GOT_ID' fails the client's id filter"
[ "$GOT_ID" = "$MSG_ID" ] || fail "received id $GOT_ID, but alice sent $MSG_ID"
[ "$(jq -r '.envelope.from' item1.json)" = "$ALICE_ADDR" ] || fail "envelope.from: $(jq -c .envelope item1.json)"
[ "$(jq -r '.envelope.thread_id' item1.json)" = "$MSG_ID" ] || fail "envelope.thread_id: $(jq -c .envelope item1.json)"
[ "$(jq -r '.payload.message' item1.json)" = "Can you review PR #42? Café ☕" ] ||
  fail "payload.message changed: $(jq -c .payload item1.json)"
verify_item item1.json alice/public.pem ||
  fail "alice's signature does not verify on bob's side (as the plugin checks it): $(body_of item1.json)"
# The provider-supplied sender key (when present) is alice's key.
if [ "$(jq -r '.sender_public_key // empty' item1.json)" != "" ]; then
  jq -r '.sender_public_key' item1.json >sender_key.pem
  cmp -s <(openssl pkey -pubin -in sender_key.pem -outform DER) \
    <(openssl pkey -pubin -in alice/public.pem -outform DER) ||
    fail "sender_public_key is not alice's key"
fi

ack_status=$(http ack.json -X POST -H "Authorization: Bearer $BOB_KEY" --connect-timeout 3 \
  "$BASE/v1/inbox/$GOT_ID/ack")
[[ "$ack_status" =~ ^2 ]] || fail "POST /v1/inbox/$GOT_ID/ack: HTTP $ack_status: $(body_of ack.json)"

fetch_external "$BOB_KEY" inbox2.json
COUNT=$(jq '.messages | length' inbox2.json)
[ "$COUNT" -eq 0 ] || fail "bob's inbox still has $COUNT messages after the ack: $(body_of inbox2.json)"

# ---------------------------------------------------------------------------------------------
# 5. bob replies (amp-reply -> amp-send) on the local/flat path (row P6); alice fetches and
#    acks on the local path (rows P7, P8).
# ---------------------------------------------------------------------------------------------
ORIG_THREAD=$(jq -r '.envelope.thread_id' item1.json)
ORIG_PRIO=$(jq -r '.envelope.priority // "normal"' item1.json)
REPLY_SUBJECT="Re: $(jq -r '.envelope.subject' item1.json)"
jq -n --arg to "$ALICE_ADDR" --arg subject "$REPLY_SUBJECT" --arg prio "$ORIG_PRIO" \
  --arg reply "$GOT_ID" --arg thread "$ORIG_THREAD" \
  '{to: $to, subject: $subject, priority: $prio,
    payload: {type: "response", message: "Looks good, merged.", context: {score: 2.0, tags: ["lgtm"]}},
    in_reply_to: $reply, thread_id: $thread}' >reply.json
# Local path: FROM is the local config address (name@tenant.$AMP_PROVIDER_DOMAIN, here the same
# as the provider's), TO and SUBJ are read through @tsv.
read -r R_TO R_SUBJ < <(jq -r '[.to, .subject] | @tsv' reply.json)
R_HASH=$(payload_hash reply.json)
R_SIG=$(sign bob/private.pem "$BOB_ADDR|$R_TO|$R_SUBJ|$ORIG_PRIO|$GOT_ID|$R_HASH")
jq -c --arg sig "$R_SIG" '. + {signature: $sig}' reply.json >reply-body.json

status=$(http reply-resp.json -X POST -H "Content-Type: application/json" \
  -H "Authorization: Bearer $BOB_KEY" --data-binary @reply-body.json "$BASE/api/v1/route")
case "$status" in
  200 | 201 | 202) ;;
  *) fail "reply bob->alice (flat): HTTP $status: $(body_of reply-resp.json)" ;;
esac
REPLY_ID=$(jq -r '.id // empty' reply-resp.json)
REPLY_STATUS=$(jq -r '.status // "sent"' reply-resp.json)
REPLY_METHOD=$(jq -r '.method // "api"' reply-resp.json)
[[ "$REPLY_ID" =~ ^msg_[0-9]+_[a-f0-9]+$ ]] || fail "reply id '$REPLY_ID' fails the client's id filter: $(body_of reply-resp.json)"
[ -n "$REPLY_STATUS" ] && [ -n "$REPLY_METHOD" ] || fail "reply: empty status/method"

PENDING_STATUS=$(http pending1.json -H "Authorization: Bearer $ALICE_KEY" \
  -H "Accept: application/json" "$BASE/api/v1/messages/pending")
[ "$PENDING_STATUS" = "200" ] || fail "GET /api/v1/messages/pending: HTTP $PENDING_STATUS: $(body_of pending1.json)"
COUNT=$(jq '.messages | length' pending1.json)
[ "$COUNT" -eq 1 ] || fail "alice has $COUNT pending messages, expected 1: $(body_of pending1.json)"
jq -c '.messages[0]' pending1.json >item2.json
GOT_REPLY_ID=$(jq -r '.envelope.id // .id' item2.json)
[ "$GOT_REPLY_ID" = "$REPLY_ID" ] || fail "alice got $GOT_REPLY_ID, the route answered $REPLY_ID"
[ "$(jq -r '.envelope.in_reply_to' item2.json)" = "$MSG_ID" ] ||
  fail "reply in_reply_to: $(jq -c .envelope item2.json)"
[ "$(jq -r '.envelope.thread_id' item2.json)" = "$ORIG_THREAD" ] ||
  fail "reply thread_id: $(jq -c .envelope item2.json)"
[ "$(jq -r '.envelope.from' item2.json)" = "$BOB_ADDR" ] || fail "reply from: $(jq -c .envelope item2.json)"
[ "$(jq -r '.envelope.subject' item2.json)" = "Re: Hello Bob" ] || fail "reply subject: $(jq -c .envelope item2.json)"
[ "$(jq -r '.payload.type' item2.json)" = "response" ] || fail "reply type: $(jq -c .payload item2.json)"
verify_item item2.json bob/public.pem || fail "bob's reply signature does not verify: $(body_of item2.json)"

del_status=$(curl -sS --connect-timeout 3 -o del.json -w '%{http_code}' -G -X DELETE \
  -H "Authorization: Bearer $ALICE_KEY" --data-urlencode "id=$GOT_REPLY_ID" \
  "$BASE/api/v1/messages/pending" || true)
[[ "$del_status" =~ ^2 ]] || fail "DELETE /api/v1/messages/pending?id=$GOT_REPLY_ID: HTTP $del_status: $(body_of del.json)"

PENDING_STATUS=$(http pending2.json -H "Authorization: Bearer $ALICE_KEY" \
  -H "Accept: application/json" "$BASE/api/v1/messages/pending")
[ "$PENDING_STATUS" = "200" ] || fail "GET /api/v1/messages/pending: HTTP $PENDING_STATUS"
COUNT=$(jq '.messages | length' pending2.json)
[ "$COUNT" -eq 0 ] || fail "alice still has $COUNT pending after the ack: $(body_of pending2.json)"

# ---------------------------------------------------------------------------------------------
# 6. A spoofed from: alice's key and API key, envelope.from = bob, re-signed -> 403.
# ---------------------------------------------------------------------------------------------
SPOOF_ID=$(generate_message_id)
jq -n --arg id "$SPOOF_ID" --arg from "$BOB_ADDR" --arg to "$BOB_ADDR" \
  --arg ts "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg exp "$EXPIRES" \
  '{envelope: {version: "amp/0.1", id: $id, from: $from, to: $to, subject: "I am bob",
     priority: "normal", timestamp: $ts, thread_id: $id, in_reply_to: null,
     expires_at: $exp, signature: ""},
    payload: {type: "notification", message: "spoofed", context: null}}' >spoof.json
SP_HASH=$(payload_hash spoof.json)
SP_SIG=$(sign alice/private.pem "$BOB_ADDR|$BOB_ADDR|I am bob|normal||$SP_HASH")
jq -c --arg sig "$SP_SIG" '.envelope.signature = $sig' spoof.json >spoof-body.json
status=$(post_envelope spoof-body.json "$ALICE_ROUTE" "$ALICE_KEY" spoof-resp.json)
[ "$status" = "403" ] || fail "spoofed from: HTTP $status (expected 403): $(body_of spoof-resp.json)"

fetch_external "$BOB_KEY" inbox3.json
COUNT=$(jq '.messages | length' inbox3.json)
[ "$COUNT" -eq 0 ] || fail "the spoofed message reached bob's inbox: $(body_of inbox3.json)"

echo "sent $MSG_ID ($SEND_STATUS), reply $REPLY_ID ($REPLY_STATUS via $REPLY_METHOD)"
echo OK
