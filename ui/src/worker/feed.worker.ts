/// <reference lib="webworker" />
/**
 * The feed SharedWorker: ONE WebSocket to lt-gateway per browser, shared by every tab.
 * - per-topic reference counts across ports (subscribe upstream once);
 * - a last-value cache (latest snapshot per key, latest message per subject) so a new tab paints at once;
 * - reconnect with exponential backoff (capped, jittered); after a reconnect every topic is
 *   subscribed again and the pages re-read their snapshots (status 'connected').
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { ClientFrameSchema, ServerFrameSchema, type ClientFrame } from '../gen/langtian/gateway/v1/gateway_pb'
import { backoffDelay } from '../feed/backoff'
import { RefCounts } from '../feed/refcount'
import type { ConnState, ForwardedMessage, PageToWorker, WorkerToPage } from './protocol'

declare const self: SharedWorkerGlobalScope

const ports = new Set<MessagePort>()
const refs = new RefCounts<MessagePort>()
const subIds = new Map<string, number>() // topic → gateway subscription id
const topicOf = new Map<number, string>()
const lastSnapshot = new Map<string, Uint8Array>()
const lastBySubject = new Map<string, ForwardedMessage>()
const snapshotWaiters = new Map<string, Set<MessagePort>>()
let nextId = 1
let socket: WebSocket | undefined
let target: { url: string; token: string } | undefined
let state: ConnState = 'connecting'
let attempt = 0
let level = 0
let sockets = 0

function post(port: MessagePort, m: WorkerToPage, transfer: Transferable[] = []): void {
  port.postMessage(m, transfer)
}

function broadcastStatus(): void {
  for (const p of ports) post(p, { type: 'status', state, attempt, level, sockets, ports: ports.size })
}

function send(frame: ClientFrame): void {
  if (socket?.readyState === WebSocket.OPEN) socket.send(toBinary(ClientFrameSchema, frame))
}

function subscribeUpstream(topic: string, priority: boolean): void {
  let id = subIds.get(topic)
  if (id === undefined) {
    id = nextId++
    subIds.set(topic, id)
    topicOf.set(id, topic)
  }
  send(create(ClientFrameSchema, { kind: { case: 'subscribe', value: { id, subject: topic, priority } } }))
}

function connect(): void {
  if (!target) return
  const ws = new WebSocket(`${target.url}?token=${encodeURIComponent(target.token)}`)
  ws.binaryType = 'arraybuffer'
  socket = ws
  ws.onopen = () => {
    sockets++
    attempt = 0
    state = 'connected'
    for (const topic of refs.topics()) subscribeUpstream(topic, true)
    for (const key of snapshotWaiters.keys()) requestSnapshot(key)
    broadcastStatus()
  }
  ws.onmessage = (ev: MessageEvent<ArrayBuffer>) => onFrame(new Uint8Array(ev.data))
  ws.onclose = (ev: CloseEvent) => {
    if (socket === ws) socket = undefined
    if (ev.code === 4001 || ev.code === 1008) {
      state = 'unauthorized'
      broadcastStatus()
      return
    }
    state = 'reconnecting'
    const delay = backoffDelay(attempt++)
    broadcastStatus()
    setTimeout(connect, delay)
  }
}

function requestSnapshot(key: string): void {
  send(create(ClientFrameSchema, { kind: { case: 'getSnapshot', value: { requestId: 0, key } } }))
}

function onFrame(bytes: Uint8Array): void {
  let frame
  try {
    frame = fromBinary(ServerFrameSchema, bytes)
  } catch (e) {
    for (const p of ports) post(p, { type: 'error', message: `undecodable frame: ${String(e)}` })
    return
  }
  const k = frame.kind
  switch (k.case) {
    case 'batch': {
      const byPort = new Map<MessagePort, ForwardedMessage[]>()
      for (const m of k.value.messages) {
        const topic = topicOf.get(m.subId)
        if (!topic) continue
        const fwd: ForwardedMessage = { topic, subject: m.subject, payload: m.payload }
        lastBySubject.set(`${topic}\u0000${m.subject}`, fwd)
        for (const p of refs.ports(topic)) {
          const list = byPort.get(p) ?? []
          list.push(fwd)
          byPort.set(p, list)
        }
      }
      for (const [p, messages] of byPort) post(p, { type: 'batch', messages })
      break
    }
    case 'snapshot': {
      lastSnapshot.set(k.value.key, k.value.payload)
      const waiting = snapshotWaiters.get(k.value.key)
      snapshotWaiters.delete(k.value.key)
      for (const p of waiting ?? []) post(p, { type: 'snapshot', key: k.value.key, payload: k.value.payload })
      break
    }
    case 'status':
      level = k.value.level
      broadcastStatus()
      break
    case 'error':
      for (const p of ports) post(p, { type: 'error', message: `${k.value.code}: ${k.value.message}` })
      break
    default:
      break
  }
}

function onPortMessage(port: MessagePort, m: PageToWorker): void {
  switch (m.type) {
    case 'hello':
      if (!target) {
        target = { url: m.url, token: m.token }
        state = 'connecting'
        connect()
      }
      post(port, { type: 'status', state, attempt, level, sockets, ports: ports.size })
      break
    case 'sub': {
      if (refs.acquire(m.topic, port)) subscribeUpstream(m.topic, m.priority ?? true)
      // Last-value cache: the tab paints at once with what the worker already has.
      const cached = [...lastBySubject.values()].filter((f) => f.topic === m.topic)
      if (cached.length > 0) post(port, { type: 'batch', messages: cached })
      break
    }
    case 'unsub':
      if (refs.release(m.topic, port)) unsubscribeUpstream(m.topic)
      break
    case 'snapshot': {
      const cached = lastSnapshot.get(m.key)
      if (cached) post(port, { type: 'snapshot', key: m.key, payload: cached })
      const waiting = snapshotWaiters.get(m.key) ?? new Set<MessagePort>()
      waiting.add(port)
      snapshotWaiters.set(m.key, waiting)
      requestSnapshot(m.key)
      break
    }
    case 'bye':
      ports.delete(port)
      for (const topic of refs.releaseAll(port)) unsubscribeUpstream(topic)
      broadcastStatus()
      break
  }
}

function unsubscribeUpstream(topic: string): void {
  const id = subIds.get(topic)
  if (id === undefined) return
  subIds.delete(topic)
  topicOf.delete(id)
  send(create(ClientFrameSchema, { kind: { case: 'unsubscribe', value: { id } } }))
}

self.onconnect = (e: MessageEvent) => {
  const port = e.ports[0]
  if (!port) return
  ports.add(port)
  port.onmessage = (ev: MessageEvent<PageToWorker>) => onPortMessage(port, ev.data)
  port.start()
  broadcastStatus()
}
