// Shared by the browser tests: paths of the binaries and artefacts, free ports, polling.
import { mkdirSync } from 'node:fs'
import { createServer } from 'node:net'
import { homedir } from 'node:os'
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
