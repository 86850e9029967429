/**
 * Starts the real `ampd` binary for integration tests: on 127.0.0.1 with a free port, a
 * temporary data directory and a config that raises the rate limits, shortens webhook
 * retries and allows loopback webhooks (the SSRF guard's `[ingest.outbound] allow_private`,
 * as the Rust tests set it). The binary is `$AMPD_BIN`, else `target/release/ampd`, else
 * `target/debug/ampd` of the workspace.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The package directory (build/test/support → ../../..). */
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
/** The Cargo workspace. */
export const WORKSPACE_DIR = resolve(PACKAGE_DIR, "../..");

/** A binary from `$env`, else the workspace's release build, else its debug build. */
export function binary(env: string, name: string): string {
  const given = process.env[env];
  if (given) {
    if (!existsSync(given)) throw new Error(`${env}=${given} does not exist`);
    return given;
  }
  for (const profile of ["release", "debug"]) {
    const p = join(WORKSPACE_DIR, "target", profile, name);
    if (existsSync(p)) return p;
  }
  throw new Error(`no ${name} binary: set ${env} or build it (cargo build -p ${name === "amp" ? "amp-client" : name})`);
}

/** The owner of the `owned` tenant in every test server (owner-mode registration). */
export const USER_KEY = "uk_sdk_tests_0123456789abcdef0123456789abcdef";
/** The provider domain of every test server. */
export const DOMAIN = "example.test";

/** Config sections of a test server, as TOML text. */
export function testConfig(overrides: { limits?: Record<string, number> } = {}): string {
  const limits = {
    api_requests_per_minute: 100000,
    tenant_requests_per_minute: 100000,
    messages_per_minute: 100000,
    pending_per_minute: 100000,
    mailbox_quota: 100000,
    ...overrides.limits,
  };
  return [
    "[server]",
    "shutdown_grace_secs = 1",
    "[ingest.registration]",
    "per_ip_per_minute = 100000",
    "[ingest.limits]",
    ...Object.entries(limits).map(([k, v]) => `${k} = ${v}`),
    "[ingest.messaging]",
    "webhook_wait_ms = 1500",
    "[ingest.outbound]",
    "allow_private = true",
    "[delivery.webhook]",
    "retry_delays_ms = [0, 300, 600]",
    "poll_interval_ms = 50",
    "[[ingest.owners]]",
    'id = "usr_sdk"',
    'tenant = "owned"',
    `user_key = "${USER_KEY}"`,
    "agent_limit = 100",
    "",
  ].join("\n");
}

/** A running ampd. */
export class Ampd {
  url = "";
  port = 0;
  child: ChildProcess | undefined;
  readonly dir: string;
  readonly #config: string;

  private constructor(dir: string, config: string) {
    this.dir = dir;
    this.#config = config;
  }

  /** Starts ampd with {@link testConfig} (plus `overrides`) and waits until it is ready. */
  static async start(overrides: Parameters<typeof testConfig>[0] = {}): Promise<Ampd> {
    const dir = mkdtempSync(join(tmpdir(), "amp-sdk-ts-"));
    const config = join(dir, "ampd.toml");
    writeFileSync(config, testConfig(overrides));
    const a = new Ampd(dir, config);
    await a.#spawn("127.0.0.1:0");
    return a;
  }

  async #spawn(listen: string): Promise<void> {
    const bin = binary("AMPD_BIN", "ampd");
    const log = createWriteStream(join(this.dir, "ampd.log"), { flags: "a" });
    const child = spawn(bin, ["--config", this.#config, "--listen", listen, "--domain", DOMAIN, "--data-dir", join(this.dir, "data"), "--log-format", "json"], {
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", AMP__LOG__FILTER: "warn" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    child.stderr!.pipe(log);
    const lines = createInterface({ input: child.stdout! });
    const first = await new Promise<string>((ok, fail) => {
      const t = setTimeout(() => fail(new Error(`ampd did not print its address in 30 s; log: ${this.log()}`)), 30_000);
      lines.once("line", (l) => (clearTimeout(t), ok(l)));
      child.once("exit", (code) => (clearTimeout(t), fail(new Error(`ampd exited (${code}) before listening; log: ${this.log()}`))));
    });
    lines.on("line", () => undefined);
    const m = /^listening on (.+)$/.exec(first);
    if (!m) throw new Error(`unexpected first line ${JSON.stringify(first)}`);
    this.url = `http://${m[1]}`;
    this.port = Number(m[1]!.split(":").pop());
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        const r = await fetch(`${this.url}/readyz`);
        if (r.ok) return;
      } catch {
        // Not yet.
      }
      if (Date.now() > deadline) throw new Error("ampd never became ready");
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The last part of ampd's log (for failure messages). */
  log(): string {
    try {
      return readFileSync(join(this.dir, "ampd.log"), "utf8").slice(-3000);
    } catch {
      return "";
    }
  }

  /** Kills ampd with SIGKILL (no shutdown at all) and waits for the exit. */
  async kill(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once("exit", r));
    c.kill("SIGKILL");
    await exited;
  }

  /** Starts ampd again on the same port and data directory. */
  async restart(): Promise<void> {
    await this.kill();
    await this.#spawn(`127.0.0.1:${this.port}`);
  }

  /** Stops ampd (SIGTERM, SIGKILL after 5 s) and removes its data. */
  async stop(): Promise<void> {
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((r) => c.once("exit", r));
      c.kill("SIGTERM");
      const t = setTimeout(() => c.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A TCP proxy in front of ampd whose connections the test can cut: a forced network drop,
 * seen by the client as a lost connection (no close frame).
 */
export class CuttableProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  url = "";

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(targetPort: number): Promise<CuttableProxy> {
    const { connect } = await import("node:net");
    let self: CuttableProxy | undefined;
    const server = createServer((client) => {
      const upstream = connect(targetPort, "127.0.0.1");
      self!.#sockets.add(client);
      self!.#sockets.add(upstream);
      client.pipe(upstream);
      upstream.pipe(client);
      const done = () => {
        client.destroy();
        upstream.destroy();
        self!.#sockets.delete(client);
        self!.#sockets.delete(upstream);
      };
      client.on("error", done).on("close", done);
      upstream.on("error", done).on("close", done);
    });
    self = new CuttableProxy(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const addr = server.address();
    if (typeof addr !== "object" || !addr) throw new Error("proxy address");
    self.url = `http://127.0.0.1:${addr.port}`;
    return self;
  }

  /** Resets every open connection (both directions). */
  cut(): number {
    const n = this.#sockets.size;
    for (const s of this.#sockets) s.resetAndDestroy?.() ?? s.destroy();
    this.#sockets.clear();
    return n;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }
}

/** Polls `check` every 20 ms until it returns a value other than `undefined`, or throws after `ms`. */
export async function eventually<T>(what: string, check: () => T | undefined | Promise<T | undefined>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A unique agent name for this test run. */
let counter = 0;
export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${++counter}`;
}
