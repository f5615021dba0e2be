/** The page's side of the feed: one port to the shared feed worker (one WebSocket per browser). */
import type { PageToWorker, WorkerToPage } from '../worker/protocol'

export interface FeedConnection {
  send(m: PageToWorker): void
  onMessage(handler: (m: WorkerToPage) => void): void
}

/** Connects this tab to the browser's feed worker, telling it where the gateway is. */
export function connectFeed(token: string): FeedConnection {
  if (typeof SharedWorker !== 'function') {
    throw new Error('this browser has no SharedWorker; the Web Locks fallback is not built yet')
  }
  const worker = new SharedWorker(new URL('../worker/feed.worker.ts', import.meta.url), {
    type: 'module',
    name: 'langtian-feed',
  })
  const port = worker.port
  const handlers: Array<(m: WorkerToPage) => void> = []
  port.onmessage = (ev: MessageEvent<WorkerToPage>) => handlers.forEach((h) => h(ev.data))
  port.start()
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
  const conn: FeedConnection = {
    send: (m) => port.postMessage(m),
    onMessage: (h) => handlers.push(h),
  }
  conn.send({ type: 'hello', url: `${scheme}://${location.host}/ws`, token })
  // MessagePorts have no close event: say goodbye when the page goes away.
  addEventListener('pagehide', () => conn.send({ type: 'bye' }))
  return conn
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
