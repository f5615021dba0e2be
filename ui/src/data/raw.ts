/** Low-rate feeds kept in TanStack DB: discovery nodes (JSON heartbeats on `$KV.lt_nodes.<id>`). */
import { createCollection, type Collection } from '@tanstack/db'
import type { FeedConnection } from '../feed/connection'

/** What a node says about itself (`langtian_core::discovery::NodeInfo`). */
export interface NodeRow {
  node_id: string
  role: string
  version: string
  host: string
  started_at_ms: number
  last_seen_ms: number
  load: number
  endpoints: Record<string, string>
  metadata: Record<string, string>
}

const decoder = new TextDecoder()

/** Parses one heartbeat; undefined for a deleted/expired entry or a payload that is not NodeInfo. */
export function parseNode(payload: Uint8Array): NodeRow | undefined {
  if (payload.length === 0) return undefined
  try {
    const v = JSON.parse(decoder.decode(payload)) as Partial<NodeRow>
    if (typeof v.node_id !== 'string' || typeof v.role !== 'string') return undefined
    return {
      node_id: v.node_id,
      role: v.role,
      version: v.version ?? '',
      host: v.host ?? '',
      started_at_ms: v.started_at_ms ?? 0,
      last_seen_ms: v.last_seen_ms ?? 0,
      load: v.load ?? 0,
      endpoints: v.endpoints ?? {},
      metadata: v.metadata ?? {},
    }
  } catch {
    return undefined
  }
}

export function nodesCollection(conn: FeedConnection): Collection<NodeRow, string> {
  return createCollection<NodeRow, string>({
    id: 'nodes',
    getKey: (n) => n.node_id,
    startSync: true,
    gcTime: 0,
    sync: {
      rowUpdateMode: 'full',
      sync: ({ begin, write, commit, markReady, collection }) => {
        const off = conn.onMessage((m) => {
          if (m.type !== 'raw' || m.feed !== 'nodes') return
          begin()
          for (const msg of m.messages) {
            const id = msg.subject.split('.').slice(2).join('.')
            const node = parseNode(msg.payload)
            if (node) write({ type: collection.has(node.node_id) ? 'update' : 'insert', value: node })
            else if (collection.has(id)) write({ type: 'delete', key: id })
          }
          commit()
        })
        // An empty list is a valid state (nodes appear with their next heartbeat).
        markReady()
        const unsub = conn.subscribe('nodes')
        return () => {
          off()
          unsub()
        }
      },
    },
  })
}
