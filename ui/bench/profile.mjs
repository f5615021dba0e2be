// Where the CPU goes during the browser benchmark's load: lt up at 4,000 ticks/s, five tabs of
// the ticks view. Prints, per tab, the main thread's busy time per second (CDP Performance
// metrics: TaskDuration, ScriptDuration, LayoutDuration, RecalcStyleDuration) and, per process
// (lt up, Chromium's browser, GPU and renderers), CPU seconds per second from /proc.
//   node bench/profile.mjs [--delta 16] [--seconds 8] [--trace FILE]
import { readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { feeds, until } from '../e2e/helpers.mjs'
import { startLoad } from './load.mjs'

const args = process.argv.slice(2)
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt)
const deltaMs = Number(opt('--delta', '16'))
const seconds = Number(opt('--seconds', '8'))
const traceFile = opt('--trace', '')
const cpuProfileFile = opt('--cpuprofile', '')

const HZ = 100
function cpuTicks() {
  const out = new Map()
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')
      const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
      out.set(pid, { ticks: Number(rest[11]) + Number(rest[12]), cmd, comm })
    } catch {}
  }
  return out
}
function label({ cmd, comm }) {
  // Chromium rewrites its argv: look for --type= anywhere in the command line.
  const type = cmd.match(/--type=(\S+)/)?.[1]
  if (type) return `chromium ${type}${cmd.includes('--extension-process') ? ' (extension)' : ''}`
  if (/chrom/.test(comm) || /chromium/.test(cmd)) return 'chromium browser'
  return cmd.split(' ').slice(0, 2).join(' ').split('/').pop()
}

/** The front tab's rendering phases from the trace: per-frame cost and what each layout started
 * from (its layout roots: a grid cell when cells are relayout boundaries, the grid body if not). */
function summariseTrace(file) {
  const raw = JSON.parse(readFileSync(file, 'utf8'))
  const events = Array.isArray(raw) ? raw : raw.traceEvents
  const mains = new Set(events.filter((e) => e.ph === 'M' && e.name === 'thread_name' && e.args?.name === 'CrRendererMain').map((e) => `${e.pid}:${e.tid}`))
  const byThread = new Map()
  for (const e of events) {
    const t = `${e.pid}:${e.tid}`
    if (e.ph !== 'X' || !mains.has(t)) continue
    if (!byThread.has(t)) byThread.set(t, [])
    byThread.get(t).push(e)
  }
  // The traced (front) tab is the renderer with the most layouts.
  const front = [...byThread.values()].sort((a, b) => b.filter((e) => e.name === 'Layout').length - a.filter((e) => e.name === 'Layout').length)[0] ?? []
  const q = (xs, p) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] : 0)
  for (const name of ['Layout', 'PrePaint', 'Paint', 'Layerize', 'Commit']) {
    // Paint events nest (the document's, then one per painted object): count the document's.
    const ds = front.filter((e) => e.name === name && (name !== 'Paint' || e.args?.data?.nodeName === '#document')).map((e) => e.dur / 1000)
    const sum = ds.reduce((a, b) => a + b, 0)
    console.log(`front tab ${name.padEnd(8)} ${String(ds.length).padStart(6)} × · p50 ${q(ds, 0.5).toFixed(2)} p90 ${q(ds, 0.9).toFixed(2)} ms · ${(sum / seconds).toFixed(0)} ms/s`)
  }
  const roots = new Map()
  for (const e of front.filter((x) => x.name === 'Layout')) {
    for (const r of e.args?.endData?.layoutRoots ?? []) roots.set(r.nodeName, (roots.get(r.nodeName) ?? 0) + 1)
  }
  console.log(`front tab layout roots: ${[...roots].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([n, c]) => `${n} ×${c}`).join(', ')}`)
}

const { browser, context, pages, close } = await startLoad('lt-prof-', deltaMs)
try {
  await until('every tab live', async () => (await feeds(pages)).every((f) => f?.state === 'connected' && f.ticks >= 150), 30_000)
  await pages[0].bringToFront()
  await new Promise((r) => setTimeout(r, 3000))
  const sessions = await Promise.all(pages.map(async (p) => {
    const s = await context.newCDPSession(p)
    await s.send('Performance.enable')
    return s
  }))
  const metrics = async () => Promise.all(sessions.map(async (s) => Object.fromEntries((await s.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]))))
  if (traceFile) await browser.startTracing(pages[0], { path: traceFile, categories: ['devtools.timeline', 'disabled-by-default-devtools.timeline', 'v8.execute', 'blink.user_timing'] })
  if (cpuProfileFile) {
    await sessions[1].send('Profiler.enable')
    await sessions[1].send('Profiler.setSamplingInterval', { interval: 200 })
    await sessions[1].send('Profiler.start')
  }
  const m0 = await metrics()
  const c0 = cpuTicks()
  const t0 = Date.now()
  await new Promise((r) => setTimeout(r, seconds * 1000))
  const m1 = await metrics()
  const c1 = cpuTicks()
  const dt = (Date.now() - t0) / 1000
  if (traceFile) await browser.stopTracing()
  if (cpuProfileFile) writeFileSync(cpuProfileFile, JSON.stringify((await sessions[1].send('Profiler.stop')).profile))
  for (const [i, a] of m0.entries()) {
    const b = m1[i]
    const per = (k) => (((b[k] ?? 0) - (a[k] ?? 0)) / dt * 1000).toFixed(0)
    console.log(`tab ${i}${i === 0 ? ' (front)' : ''}: main thread busy ${per('TaskDuration')} ms/s · script ${per('ScriptDuration')} · style ${per('RecalcStyleDuration')} · layout ${per('LayoutDuration')} ms/s`)
  }
  const rows = []
  for (const [pid, v] of c1) {
    const before = c0.get(pid)
    if (!before) continue
    const used = (v.ticks - before.ticks) / HZ / dt
    if (used > 0.005) rows.push([used, `${pid} ${label(v)}`])
  }
  rows.sort((x, y) => y[0] - x[0])
  let total = 0
  for (const [u, what] of rows) {
    total += u
    console.log(`${(u * 100).toFixed(1).padStart(6)} % cpu  ${what}`)
  }
  console.log(`${(total * 100).toFixed(1).padStart(6)} % cpu  total (of ${200} %)`)
  if (traceFile) summariseTrace(traceFile)
} finally {
  await close()
}
