/// <reference lib="webworker" />
/** The feed SharedWorker: hosts the browser's one FeedHub (one WebSocket for every tab). */
import { FeedHub, type HubPort } from '../feed/hub'
import type { PageToHub } from './protocol'

declare const self: SharedWorkerGlobalScope

const hub = new FeedHub({ mode: 'shared-worker' })

self.onconnect = (e: MessageEvent) => {
  const port = e.ports[0]
  if (!port) return
  const p: HubPort = { post: (m) => port.postMessage(m) }
  hub.attach(p)
  port.onmessage = (ev: MessageEvent<PageToHub>) => hub.onMessage(p, ev.data)
  port.start()
}
