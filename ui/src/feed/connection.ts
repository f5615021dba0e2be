/** The page's side of the feed: one link to the browser's feed hub (one WebSocket per browser). */
import { joinLeaderElection } from './leader'
import type { FeedName, HubToPage, PageToHub } from '../worker/protocol'

export interface FeedConnection {
  /** `shared-worker` or `web-locks`. */
  readonly mode: 'shared-worker' | 'web-locks'
  send(m: PageToHub): void
  /** Adds a handler (it gets the latest status at once, if one came); returns its remover. */
  onMessage(handler: (m: HubToPage) => void): () => void
  /** Subscribes to a feed (re-sent after the fallback's leader changes). */
  subscribe(feed: FeedName): () => void
  /** True when this tab runs the hub itself (the fallback's leader). */
  leading(): boolean
}

/** Which transport: SharedWorker unless the browser lacks it or `?feed=locks` asks for the fallback. */
export function feedMode(search = location.search): 'shared-worker' | 'web-locks' {
  const forced = new URLSearchParams(search).get('feed')
  if (forced === 'locks') return 'web-locks'
  return typeof SharedWorker === 'function' ? 'shared-worker' : 'web-locks'
}

/** Connects this tab to the browser's feed hub, telling it where the gateway is. */
export function connectFeed(token: string): FeedConnection {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  const hello: PageToHub = { type: 'hello', url: `${scheme}://${location.host}/ws`, token }
  const handlers = new Set<(m: HubToPage) => void>()
  // The hub's status may arrive before the page's handlers exist: keep the latest for them.
  let lastStatus: HubToPage | undefined
  const dispatch = (m: HubToPage) => {
    if (m.type === 'status') lastStatus = m
    handlers.forEach((h) => h(m))
    if (m.type === 'rows') ack.received()
  }
  const subs = new Map<FeedName, number>()
  const mode = feedMode()

  let raw: (m: PageToHub) => void
  let leading = () => false
  // Flow control (src/feed/flow.ts): the hub sends at most a few rows messages this page has not
  // acknowledged; the page acknowledges them when it next gets an animation frame, i.e. when it
  // can show them. A tab the browser gives few frames (or none: hidden) is sent merged batches.
  const ack = new FrameAck((n) => raw({ type: 'ack', n }))
  if (mode === 'shared-worker') {
    const worker = new SharedWorker(new URL('../worker/feed.worker.ts', import.meta.url), {
      type: 'module',
      name: 'langtian-feed',
    })
    const port = worker.port
    port.onmessage = (ev: MessageEvent<HubToPage>) => dispatch(ev.data)
    port.start()
    raw = (m) => port.postMessage(m)
    raw(hello)
  } else {
    const link = joinLeaderElection(dispatch, () => {
      // A (new) leader: say hello again and repeat this tab's subscriptions.
      link.send(hello)
      for (const feed of subs.keys()) link.send({ type: 'sub', feed })
    })
    raw = (m) => link.send(m)
    leading = () => link.leading
    raw(hello)
  }
  // MessagePorts have no close event: say goodbye when the page goes away.
  addEventListener('pagehide', () => raw({ type: 'bye' }))
  return {
    mode,
    leading: () => leading(),
    send: raw,
    onMessage(h) {
      handlers.add(h)
      if (lastStatus) h(lastStatus)
      return () => handlers.delete(h)
    },
    subscribe(feed) {
      const n = subs.get(feed) ?? 0
      subs.set(feed, n + 1)
      if (n === 0) raw({ type: 'sub', feed })
      return () => {
        const left = (subs.get(feed) ?? 1) - 1
        if (left > 0) subs.set(feed, left)
        else {
          subs.delete(feed)
          raw({ type: 'unsub', feed })
        }
      }
    },
  }
}

/** Counts rows messages and acknowledges them at the next animation frame (one ack per frame). */
export class FrameAck {
  private n = 0
  private scheduled = false

  constructor(
    private readonly send: (n: number) => void,
    private readonly nextFrame: (cb: () => void) => void = (cb) => requestAnimationFrame(cb),
  ) {}

  received(): void {
    this.n++
    if (this.scheduled) return
    this.scheduled = true
    this.nextFrame(() => {
      this.scheduled = false
      const n = this.n
      this.n = 0
      if (n > 0) this.send(n)
    })
  }
}

/** The token from `?token=` (kept for the session so reloads keep working). */
export function tokenFromLocation(): string | undefined {
  const fromUrl = new URLSearchParams(location.search).get('token')
  if (fromUrl) {
    sessionStorage.setItem('lt_token', fromUrl)
    return fromUrl
  }
  return sessionStorage.getItem('lt_token') ?? undefined
}
