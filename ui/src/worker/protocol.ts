/** Messages between a page (tab) and the feed SharedWorker over its MessagePort. */

export type PageToWorker =
  | { type: 'hello'; url: string; token: string }
  | { type: 'sub'; topic: string; priority?: boolean }
  | { type: 'unsub'; topic: string }
  | { type: 'snapshot'; key: string }
  | { type: 'bye' }

export type ConnState = 'connecting' | 'connected' | 'reconnecting' | 'unauthorized'

export interface ForwardedMessage {
  topic: string
  subject: string
  payload: Uint8Array
}

export type WorkerToPage =
  | { type: 'status'; state: ConnState; attempt: number; level: number; sockets: number; ports: number }
  | { type: 'batch'; messages: ForwardedMessage[] }
  | { type: 'snapshot'; key: string; payload: Uint8Array }
  | { type: 'error'; message: string }
