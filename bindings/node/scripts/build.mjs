// Builds the addon the way `napi build --platform --js index.js --dts index.d.ts` does, but with a
// plain `cargo build` for the host: the napi CLI always passes `--target <triple>`, which gives
// the addon a second build tree (every dependency compiled again, ~9 min on two cores) beside the
// one the rest of the workspace shares. The generation steps are the CLI's own functions.
//
//   node scripts/build.mjs [--release]
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generateTypeDef, parseTriple, writeJsBinding } from '@napi-rs/cli'

const here = join(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(join(here, 'package.json'), 'utf8'))
const crate = 'langtian-bindings-node'
const release = process.argv.includes('--release')

const host = /^host: (\S+)$/m.exec(execFileSync('rustc', ['-vV'], { encoding: 'utf8' }))?.[1]
if (!host) throw new Error('could not read the host triple from `rustc -vV`')
const target = parseTriple(host)

// napi-derive writes one type-def file per crate into this folder while compiling; the
// NAPI_FORCE_BUILD_* variable makes cargo recompile our crate so that it does.
const typeDefDir = mkdtempSync(join(tmpdir(), 'langtian-napi-typedef-'))
try {
  const out = execFileSync('cargo', ['build', '-p', crate, '--lib', '--message-format=json-render-diagnostics', ...(release ? ['--release'] : [])], {
    cwd: here,
    env: {
      ...process.env,
      NAPI_TYPE_DEF_TMP_FOLDER: typeDefDir,
      [`NAPI_FORCE_BUILD_${crate.replace(/-/g, '_').toUpperCase()}`]: String(Date.now()),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
  })
  const artifact = out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l))
    .filter((m) => m.reason === 'compiler-artifact' && m.target?.name === crate.replace(/-/g, '_'))
    .flatMap((m) => m.filenames)
    .find((f) => /\.(so|dylib|dll)$/.test(f))
  if (!artifact) throw new Error(`cargo built no cdylib for ${crate}`)

  const binary = `${pkg.napi.binaryName}.${target.platformArchABI}.node`
  copyFileSync(artifact, join(here, binary))

  const { exports, dts } = await generateTypeDef({ typeDefDir, cwd: here, declareBindingTarget: true })
  writeFileSync(join(here, 'index.d.ts'), dts)
  await writeJsBinding({
    platform: true,
    idents: exports,
    jsBinding: 'index.js',
    binaryName: pkg.napi.binaryName,
    packageName: pkg.name,
    version: pkg.version,
    outputDir: here,
  })
  console.log(`built ${binary} (${host}, ${release ? 'release' : 'dev'}), index.js, index.d.ts (${exports.length} exports)`)
} finally {
  rmSync(typeDefDir, { recursive: true, force: true })
}
