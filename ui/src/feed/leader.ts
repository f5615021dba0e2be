/**
 * The fallback where SharedWorker is missing (older Android Chrome, some embedded views): the tab
 * holding the Web Locks lock `langtian-feed-leader` runs the FeedHub (the one WebSocket) and relays
 * to the other tabs over a BroadcastChannel. When the leader tab goes away the browser releases
 * its lock, the next waiting tab takes it, announces itself, and every tab says hello again.
 */
import { FeedHub, type HubPort } from './hub'
import type { HubToPage, PageToHub } from '../worker/protocol'

const LOCK = 'langtian-feed-leader'
const CHANNEL = 'langtian-feed'

type Wire =
  | { kind: 'to-hub'; from: string; body: PageToHub }
  | { kind: 'to-page'; to: string; body: HubToPage }
  | { kind: 'leader'; id: string }

export interface LeaderLink {
  /** Sends to whichever tab leads (this one included). */
  send(m: PageToHub): void
  /** True while this tab holds the lock. */
  readonly leading: boolean
}

/**
 * Joins the election. `deliver` gets the hub's messages for this tab; `rejoin` is called when a
 * (new) leader is ready, so the page re-sends its hello and subscriptions.
 */
export function joinLeaderElection(deliver: (m: HubToPage) => void, rejoin: () => void): LeaderLink {
  const id = crypto.randomUUID()
  const channel = new BroadcastChannel(CHANNEL)
  let hub: FeedHub | undefined
  const remote = new Map<string, HubPort>()
  const self: HubPort = { post: deliver }

  const portOf = (from: string): HubPort => {
    let p = remote.get(from)
    if (!p) {
      const port: HubPort = { post: (body) => channel.postMessage({ kind: 'to-page', to: from, body } satisfies Wire) }
      remote.set(from, port)
      p = port
    }
    return p
  }

  channel.onmessage = (ev: MessageEvent<Wire>) => {
    const w = ev.data
    if (w.kind === 'to-page' && w.to === id) deliver(w.body)
    else if (w.kind === 'to-hub' && hub) {
      const p = portOf(w.from)
      hub.onMessage(p, w.body)
      if (w.body.type === 'bye') remote.delete(w.from)
    } else if (w.kind === 'leader' && w.id !== id) rejoin()
  }

  void navigator.locks.request(LOCK, () => {
    hub = new FeedHub({ mode: 'web-locks' })
    channel.postMessage({ kind: 'leader', id } satisfies Wire)
    rejoin()
    // Held until the tab goes away.
    return new Promise<void>(() => {})
  })

  return {
    send(m) {
      if (hub) hub.onMessage(self, m)
      else channel.postMessage({ kind: 'to-hub', from: id, body: m } satisfies Wire)
    },
    get leading() {
      return hub !== undefined
    },
  }
}
