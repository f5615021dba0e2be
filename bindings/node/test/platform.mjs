// Real services for the Node SDK tests: `lt up` (embedded nats-server, collector, flow into a
// local DuckLake, query service, discovery) on free ports, fed by `lt sim battery`, and a bare
// nats-server for the "no query service" case. Nothing is mocked.
import { spawn, execFile } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { createSocket as udpSocket } from 'node:dgram'
import { homedir, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const targetDir = process.env.LANGTIAN_TARGET_DIR ?? process.env.CARGO_TARGET_DIR ?? join(homedir(), '.cache', 'langtian', 'target')
export const ltBin = process.env.LT_BIN ?? join(targetDir, 'debug', 'lt')
export const natsServerBin = process.env.LANGTIAN_NATS_SERVER ?? join(root, '.deps', 'venv', 'bin', 'nats-server')

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
    s.on('error', reject)
  })
}

export function freeUdpPort() {
  return new Promise((resolve, reject) => {
    const s = udpSocket('udp4')
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
    s.on('error', reject)
  })
}

/** Polls `cond` (errors count as "not yet") until it returns a truthy value. */
export async function until(what, cond, timeoutMs = 30_000) {
  const t0 = Date.now()
  let last
  for (;;) {
    try {
      const v = await cond()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last error: ${last})`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

function waitForLine(proc, pattern, what) {
  return new Promise((resolve, reject) => {
    let out = ''
    const onData = (d) => {
      out += d
      const m = out.match(pattern)
      if (m) {
        proc.stdout.off('data', onData)
        resolve(m)
      }
    }
    proc.stdout.on('data', onData)
    proc.on('exit', (code) => reject(new Error(`${what} exited with ${code} before it was ready:\n${out}`)))
  })
}

function stopper(proc, dir) {
  return async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.on('exit', r))
      proc.kill('SIGINT')
      await exited
    }
    if (dir) rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * `lt up --no-sim --no-live` (battery samples are sent by `simBattery`); with `live` its simulators,
 * aggregator and gateway run. With `tls`:
 * `--nats-tls --no-flow`, ready once provisioned; its CA is `<dir>/nats/tls/ca.pem`.
 */
export async function startPlatform({ tls = false, live = false } = {}) {
  const [nats, http, udp] = [await freePort(), await freePort(), await freeUdpPort()]
  const dir = mkdtempSync(join(tmpdir(), 'lt-node-sdk-'))
  // With `live`: the simulators, aggregator and gateway too (a small battery fleet).
  const liveArgs = live
    ? ['--tick-rate', '400', '--rate', '200', '--devices', '2', '--channels', '8', '--gateway-addr', `127.0.0.1:${await freePort()}`]
    : ['--no-sim', '--no-live']
  const proc = spawn(ltBin, [
    'up', '--data-dir', dir, '--nats-port', String(nats), '--nats-http-port', String(http),
    '--udp', `127.0.0.1:${udp}`, '--metrics-addr', 'off', ...liveArgs,
    ...(tls ? ['--nats-tls', '--no-flow'] : []),
  ], { stdio: ['ignore', 'pipe', 'inherit'] })
  await waitForLine(proc, tls ? /registered node/ : /query service on/, 'lt up')
  return { url: `nats://127.0.0.1:${nats}`, udp, dir, stop: stopper(proc, dir) }
}

/** Sends `count` battery samples to the platform's UDP collector (returns when all are sent). */
export async function simBattery(platform, count) {
  await promisify(execFile)(ltBin, [
    'sim', 'battery', '--to', `127.0.0.1:${platform.udp}`, '--count', String(count),
    '--rate', '20000', '--devices', '4', '--channels', '16',
  ], { timeout: 120_000 })
}

/** A bare nats-server (no JetStream, no services). */
export async function startBareNats() {
  const port = await freePort()
  const proc = spawn(natsServerBin, ['-a', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] })
  // nats-server logs to stderr; "Server is ready" means it accepts clients.
  await new Promise((resolve, reject) => {
    let out = ''
    proc.stderr.on('data', (d) => {
      out += d
      if (out.includes('Server is ready')) resolve()
    })
    proc.on('exit', (code) => reject(new Error(`nats-server exited with ${code}:\n${out}`)))
  })
  return { url: `nats://127.0.0.1:${port}`, stop: stopper(proc) }
}
