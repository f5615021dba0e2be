// Shared by the browser tests: paths of the binaries and artefacts, free ports, polling, `lt up`.
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync } from 'node:fs'
import { createServer } from 'node:net'
import { homedir, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ui = join(dirname(fileURLToPath(import.meta.url)), '..')
const targetDir = process.env.LANGTIAN_TARGET_DIR ?? process.env.CARGO_TARGET_DIR ?? join(homedir(), '.cache', 'langtian', 'target')
export const ltBin = process.env.LT_BIN ?? join(targetDir, 'debug', 'lt')
export const gwBin = process.env.LT_GATEWAY_BIN ?? join(dirname(ltBin), 'lt-gateway')
export const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium'
export const artifacts = join(ui, 'e2e-artifacts')
mkdirSync(artifacts, { recursive: true })

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

export async function until(what, cond, timeoutMs = 20_000) {
  const t0 = Date.now()
  for (;;) {
    const v = await cond()
    if (v) return v
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/**
 * Starts `lt up` on free ports serving ui/dist; resolves when it prints the UI URL.
 * Returns { proc, url, nats, gw, dir, stop() }.
 */
export async function startUp(prefix, extra = []) {
  const [nats, http, gw] = [await freePort(), await freePort(), await freePort()]
  const dir = mkdtempSync(join(tmpdir(), prefix))
  const proc = spawn(ltBin, [
    'up', '--data-dir', dir, '--nats-port', String(nats), '--nats-http-port', String(http),
    '--udp', '127.0.0.1:0', '--metrics-addr', 'off', '--gateway-addr', `127.0.0.1:${gw}`,
    '--ui-dir', join(ui, 'dist'), ...extra,
  ], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  proc.stdout.on('data', (d) => (out += d))
  const url = await until('the UI URL from lt up', () => {
    if (proc.exitCode !== null) throw new Error(`lt up exited with ${proc.exitCode} before serving the UI`)
    return out.match(/UI: (http:\/\/\S+)/)?.[1]
  }, 60_000)
  if (out.includes('UI not built')) throw new Error('lt up does not serve ui/dist (run npm run build)')
  return {
    proc, url, nats, gw, dir,
    output: () => out,
    async stop() {
      if (proc.exitCode !== null) return
      proc.kill('SIGINT')
      await new Promise((r) => proc.on('exit', r))
    },
  }
}

/** The gateway's /healthz as JSON. */
export async function health(gw) {
  return (await fetch(`http://127.0.0.1:${gw}/healthz`)).json()
}

/** The feed state of every page (window.__feed(), see src/App.tsx). */
export function feeds(pages) {
  return Promise.all(pages.map((p) => p.evaluate(() => window.__feed?.())))
}
