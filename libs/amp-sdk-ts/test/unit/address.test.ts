// Addresses (spec 02): normalisation, scope and tenant, the known-provider rule, short forms.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Address, AddressError, isLocalNetworkDomain, isValidLabel, isValidMessageId, isValidName } from "amp-sdk";

test("full addresses: two-label provider, rightmost scope label is the tenant", () => {
  const a = Address.parse("Backend-Architect@Agents-Web.GitHub.23blocks.CrabMail.ai");
  assert.equal(a.toString(), "backend-architect@agents-web.github.23blocks.crabmail.ai");
  assert.equal(a.name, "backend-architect");
  assert.deepEqual(a.scope, ["agents-web", "github", "23blocks"]);
  assert.equal(a.tenant, "23blocks");
  assert.equal(a.provider, "crabmail.ai");
  assert.equal(a.shortAddress, "backend-architect@23blocks.crabmail.ai");
  assert.ok(a.equals("BACKEND-architect@agents-web.github.23blocks.crabmail.ai"));
  assert.equal(JSON.stringify({ a }), `{"a":"backend-architect@agents-web.github.23blocks.crabmail.ai"}`);
});

test("a known provider domain wins whatever its label count", () => {
  const a = Address.parse("bob@acme.api.example.test", { providerDomain: "api.example.test" });
  assert.equal(a.provider, "api.example.test");
  assert.equal(a.tenant, "acme");
  // Without it, the two-label rule.
  const b = Address.parse("bob@acme.api.example.test");
  assert.equal(b.provider, "example.test");
  assert.deepEqual(b.scope, ["acme", "api"]);
  assert.throws(() => Address.parse("bob@api.example.test", { providerDomain: "api.example.test" }), AddressError);
});

test("short forms expand with a context, and only then", () => {
  const ctx = { providerDomain: "example.test", defaultTenant: "acme" };
  assert.equal(Address.parse("bob", ctx).toString(), "bob@acme.example.test");
  assert.equal(Address.parse("bob@globex", ctx).toString(), "bob@globex.example.test");
  assert.throws(() => Address.parse("bob"), AddressError);
  assert.throws(() => Address.parse("bob@globex"), AddressError);
});

test("invalid names, labels, lengths and missing tenants are refused", () => {
  for (const bad of ["", "a b@acme.x.test", "bob@example.test", "bob@ac_me.x.test", "bob@acme..x.test", "b!b@acme.x.test", `${"a".repeat(64)}@acme.x.test`, `bob@${"a.".repeat(130)}x.test`]) {
    assert.throws(() => Address.parse(bad), AddressError, bad);
    assert.ok(!Address.isValid(bad), bad);
  }
  assert.ok(isValidName("under_score-1"));
  assert.ok(!isValidName("dot.name"));
  assert.ok(isValidLabel("a-b"));
  assert.ok(!isValidLabel("a_b"));
  assert.throws(() => Address.build("bob", [], "example.test"), AddressError);
  assert.throws(() => Address.build("bob", ["acme"], "localdomain"), AddressError);
  assert.equal(Address.build("Bob", "team.acme", "Example.Test").toString(), "bob@team.acme.example.test");
});

test("local-network domains and message ids", () => {
  assert.ok(isLocalNetworkDomain("aimaestro.local"));
  assert.ok(isLocalNetworkDomain("x.internal."));
  assert.ok(!isLocalNetworkDomain("crabmail.ai"));
  assert.ok(Address.parse("a@org.aimaestro.local").isLocalNetwork);
  assert.ok(isValidMessageId("msg_1706648400_abc123"));
  assert.ok(!isValidMessageId("msg_1706648400_ABC123"));
});
