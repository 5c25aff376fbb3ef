// A real Folio for the Node suites (federation, persisted documents, examples): the binary cargo builds, on a free port, with a fresh SQLite file in a
// temporary directory. Nothing here knows GraphQL beyond posting a document.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The signing secret of the test Folio's own tokens. */
export const JWT_SECRET = 'node-suite-test-secret-0123456789-abcdef';

/**
 * The Folio binary: `FOLIO_BIN` when set, otherwise whatever `cargo build` produces (a no-op when CI has built it
 * already). Cargo reports the executable's path itself, so `CARGO_TARGET_DIR` and profiles need no guessing.
 */
export function folioBinary() {
  if (process.env.FOLIO_BIN) return process.env.FOLIO_BIN;
  const build = spawnSync(
    'cargo',
    ['build', '--bin', 'folio', '--message-format=json-render-diagnostics'],
    { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 * 1024 * 1024 },
  );
  if (build.error) throw new Error(`cannot run cargo (set FOLIO_BIN to a built folio): ${build.error.message}`);
  if (build.status !== 0) throw new Error(`cargo build failed with status ${build.status}`);
  const executable = build.stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line))
    .find((m) => m.reason === 'compiler-artifact' && m.target?.name === 'folio' && m.executable)?.executable;
  if (!executable) throw new Error('cargo build did not report the folio executable');
  return executable;
}

/** A TCP port nobody listens on right now. */
export function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.unref();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** A running Folio process. `stop()` is idempotent and always safe to call. */
export class Folio {
  constructor(child, url, dir) {
    this.child = child;
    this.url = url;
    this.dir = dir;
    this.output = '';
    this.spawnError = null;
    child.on('error', (err) => {
      this.spawnError = err;
    });
    child.stdout.on('data', (d) => this.#keep(d));
    child.stderr.on('data', (d) => this.#keep(d));
  }

  #keep(data) {
    // The last 64 KiB of logs, for a failure message.
    this.output = (this.output + data.toString()).slice(-65536);
  }

  /**
   * Starts Folio on a fresh SQLite database: no demo data, no rate limits (the suite sends bursts from one
   * address), the given extra settings. Only the variables it needs are passed, so settings from the caller's
   * environment (a `REDIS_URL`, a `DATABASE_URL`) cannot leak in.
   */
  static async start(extraEnv = {}) {
    const bin = folioBinary();
    const dir = mkdtempSync(join(tmpdir(), 'folio-node-'));
    const port = await freePort();
    const env = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? dir,
      DATABASE_URL: `sqlite://${join(dir, 'folio.db')}`,
      FOLIO_BIND: `127.0.0.1:${port}`,
      FOLIO_JWT_SECRET: JWT_SECRET,
      FOLIO_DEMO_DATA: 'false',
      FOLIO_RATE_LIMIT_PER_MIN: '0',
      FOLIO_SIGNUPS_PER_HOUR: '0',
      FOLIO_LOG: 'warn',
      ...extraEnv,
    };
    const child = spawn(bin, ['serve'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const folio = new Folio(child, `http://127.0.0.1:${port}`, dir);
    // Last resort if the test process ends without `stop()` (an uncaught error, process.exit): no orphan.
    const orphanGuard = () => child.kill('SIGKILL');
    process.once('exit', orphanGuard);
    child.once('exit', () => process.removeListener('exit', orphanGuard));
    try {
      await folio.#ready();
    } catch (err) {
      await folio.stop();
      throw err;
    }
    return folio;
  }

  async #ready() {
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (this.spawnError) throw new Error(`cannot start folio: ${this.spawnError.message}`);
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`folio exited during startup (${this.child.exitCode ?? this.child.signalCode}):\n${this.output}`);
      }
      try {
        const res = await fetch(`${this.url}/readyz`);
        if (res.ok) return;
      } catch {
        // Not listening yet.
      }
      await sleep(100);
    }
    throw new Error(`folio did not become ready within 60 s:\n${this.output}`);
  }

  /** POSTs a GraphQL operation to Folio directly; returns the JSON body. */
  async gql(query, variables = {}, token) {
    const headers = { 'content-type': 'application/json', accept: 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(`${this.url}/graphql`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ query, variables }),
    });
    return res.json();
  }

  /** Like `gql`, but an answer with errors throws. Returns `data`. */
  async must(query, variables = {}, token) {
    const body = await this.gql(query, variables, token);
    if (body.errors?.length) throw new Error(`folio answered errors: ${JSON.stringify(body.errors)}`);
    return body.data;
  }

  async text(path) {
    const res = await fetch(`${this.url}${path}`);
    if (!res.ok) throw new Error(`GET ${path}: ${res.status}`);
    return res.text();
  }

  /** `folio_db_statements_total`: every SQL statement Folio has run. */
  async statements() {
    const metrics = await this.text('/metrics');
    const line = metrics.split('\n').find((l) => l.startsWith('folio_db_statements_total '));
    if (!line) throw new Error('no folio_db_statements_total in /metrics');
    return Number(line.split(' ')[1]);
  }

  /** Stops the process (SIGTERM, then SIGKILL after 5 s) and removes its database. */
  async stop() {
    const child = this.child;
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((ok) => child.once('exit', ok));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
