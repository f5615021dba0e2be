// Per-frame rendering cost of one page, from a Chromium trace: the main thread's
// "AnimationFrame::Render" spans (the long-animation-frame instrumentation Chromium records for
// every frame: the frame's requestAnimationFrame callbacks — here the grid's React commit — then
// style, layout, pre-paint, paint, layerize and the commit to the compositor). Seed 002's
// acceptance criterion 2 budgets this at ≤ 8 ms per frame with 4–5 windows open.
import { readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Durations (ms) of the traced page's AnimationFrame::Render spans, from a trace file. */
export function renderSpans(file) {
  const raw = JSON.parse(readFileSync(file, 'utf8'))
  const events = Array.isArray(raw) ? raw : raw.traceEvents
  // The traced page's renderer: the frame Playwright started tracing for.
  const started = events.find((e) => e.name === 'TracingStartedInBrowser')
  const pid = started?.args?.data?.frames?.find((f) => f.isOutermostMainFrame)?.processId
  if (pid === undefined) throw new Error(`${file}: no TracingStartedInBrowser event naming the page's renderer`)
  const open = new Map()
  const spans = []
  for (const e of events) {
    if (e.pid !== pid || e.name !== 'AnimationFrame::Render') continue
    const id = e.id2?.local ?? e.id2?.global ?? e.id
    if (e.ph === 'b') open.set(id, e.ts)
    else if (e.ph === 'e' && open.has(id)) {
      spans.push((e.ts - open.get(id)) / 1000)
      open.delete(id)
    }
  }
  return spans
}

/** Traces `page` (it should be in front) for `seconds` and returns its per-frame render spans (ms). */
export async function traceRender(browser, page, seconds) {
  const file = join(tmpdir(), `lt-render-${process.pid}-${Date.now()}.json`)
  await browser.startTracing(page, { path: file, categories: ['devtools.timeline', 'disabled-by-default-devtools.timeline'] })
  await new Promise((r) => setTimeout(r, seconds * 1000))
  await browser.stopTracing()
  try {
    return renderSpans(file)
  } finally {
    rmSync(file, { force: true })
  }
}
