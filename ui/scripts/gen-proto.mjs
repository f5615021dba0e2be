// Generates src/gen/ from ../proto with buf + protoc-gen-es (never edit src/gen by hand).
// buf comes from LANGTIAN_BUF, else ../.deps/venv/bin/buf (installed by scripts/setup.sh).
import { execFileSync } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ui = join(dirname(fileURLToPath(import.meta.url)), '..')
const buf = process.env.LANGTIAN_BUF ?? join(ui, '..', '.deps', 'venv', 'bin', 'buf')
if (!existsSync(buf)) {
  console.error(`gen-proto: buf not found at ${buf}; run scripts/setup.sh first (or set LANGTIAN_BUF)`)
  process.exit(1)
}
rmSync(join(ui, 'src', 'gen'), { recursive: true, force: true })
execFileSync(buf, ['generate'], { cwd: ui, stdio: 'inherit' })
console.log('gen-proto: src/gen/ generated from proto/')
