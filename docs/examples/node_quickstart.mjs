// The ten lines of docs/node.md as a script: node docs/examples/node_quickstart.mjs [nats-url]
// (with `lt up` running; install the package with `npm install <repo>/bindings/node`, or run it
// from the repository, where it loads bindings/node directly).
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const { Client, queryTable } = require(process.env.LANGTIAN_NODE_SDK ?? '../../bindings/node')

const lt = await Client.connect(process.argv[2] ?? 'nats://127.0.0.1:14222') // lt up's NATS
const r = await lt.publish('note', Buffer.from(JSON.stringify({ text: 'hi' })), { source: 'svc' })
console.log('stored in', r.stream, '#', r.sequence, r.duplicate ? '(duplicate)' : '') // JetStream's PubAck
const t = await queryTable(lt, 'SELECT device_id, max(capacity) AS ah FROM lake.battery_samples GROUP BY ALL ORDER BY ALL')
console.log(t.numRows, 'devices; first:', t.get(0)?.toJSON()) // an apache-arrow Table
const sub = await lt.subscribe('lt.evt.note.>') // `break` (or sub.close()) ends the subscription
await lt.publish('note', Buffer.from('{"text":"again"}'), { source: 'svc' })
for await (const m of sub) {
  console.log(m.subject, m.envelope?.eventType, m.envelope?.payload.toString())
  break
}
