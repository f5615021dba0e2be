// @langtian/sdk against real services: `lt up` (NATS + JetStream, query service on a DuckLake that
// `lt sim battery` filled through the UDP collector, KV discovery) and a bare nats-server.
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createRequire } from 'node:module'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { simBattery, startBareNats, startPlatform, until } from './platform.mjs'

const require = createRequire(import.meta.url)
const sdk = require('../sdk.js')
const { Client, encodeEnvelope, decodeEnvelope, queryTable } = sdk

const SAMPLES = 5_000
let platform
let lt

before(async () => {
  platform = await startPlatform()
  lt = await Client.connect(platform.url, { name: 'node-sdk-test' })
  await simBattery(platform, SAMPLES)
  await until(`${SAMPLES} samples in the lake`, async () => {
    const t = await queryTable(lt, 'SELECT count(*) AS n FROM lake.battery_samples')
    return Number(t.get(0).n) === SAMPLES
  }, 60_000)
})

after(async () => {
  await platform?.stop()
})

/** The next message of `sub`, or a failure after `ms`. */
async function nextWithin(sub, ms = 5000) {
  const it = sub[Symbol.asyncIterator]()
  let timer
  const r = await Promise.race([
    it.next(),
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no message within ${ms} ms`)), ms))),
  ])
  clearTimeout(timer)
  return r
}

describe('errors carry a stable code', () => {
  test('no server → ERR_CONNECT', async () => {
    await assert.rejects(Client.connect('nats://127.0.0.1:1', { timeoutMs: 1000 }), (e) => {
      assert.equal(e.code, 'ERR_CONNECT')
      assert.match(e.message, /127\.0\.0\.1:1/)
      assert.doesNotMatch(e.message, /^\[/)
      return true
    })
  })

  test('a server without the query service → ERR_NO_SERVICE; request without responders → ERR_REQUEST', async () => {
    const bare = await startBareNats()
    try {
      const c = await Client.connect(bare.url)
      await assert.rejects(c.query('SELECT 1'), { code: 'ERR_NO_SERVICE' })
      await assert.rejects(c.request('nobody.listens', Buffer.from('x'), 1000), { code: 'ERR_REQUEST' })
      // QoS 1 needs a stream: a bare server has no JetStream.
      await assert.rejects(c.publish('note', Buffer.from('{}')), { code: 'ERR_PUBLISH' })
    } finally {
      await bare.stop()
    }
  })

  test('envelope errors are thrown synchronously with ERR_ENVELOPE', () => {
    assert.throws(() => decodeEnvelope(Buffer.from([0xff, 0xff, 0xff])), { code: 'ERR_ENVELOPE' })
    assert.throws(() => encodeEnvelope({ eventType: '', source: 's', payload: Buffer.alloc(0) }), { code: 'ERR_ENVELOPE' })
  })
})

describe('envelopes', () => {
  test('encode → decode keeps every field', () => {
    const bytes = encodeEnvelope({
      eventType: 'reading', source: 'node-test', payload: Buffer.from('{"v":1}'),
      eventId: 'id-1', partitionKey: 'dev-7',
    })
    const e = decodeEnvelope(bytes)
    assert.deepEqual(
      [e.eventId, e.eventType, e.source, e.partitionKey, e.contentType, e.payload.toString()],
      ['id-1', 'reading', 'node-test', 'dev-7', 'application/json', '{"v":1}'],
    )
    const ns = BigInt(e.timestampNs)
    assert.ok(ns > 1_600_000_000_000_000_000n && ns < 4_000_000_000_000_000_000n, e.timestampNs)
  })
})

describe('publish and subscribe', () => {
  test('QoS 1 is stored, arrives decoded, and a repeated event id is a duplicate', async () => {
    const sub = await lt.subscribe('lt.evt.note.>')
    const r = await lt.publish('note', Buffer.from(JSON.stringify({ text: 'hello' })), { source: 'nodetest', eventId: 'node-note-1' })
    assert.equal(r.subject, 'lt.evt.note.nodetest')
    assert.ok(r.stream && r.sequence > 0 && !r.duplicate, JSON.stringify(r))
    const { value: m, done } = await nextWithin(sub)
    assert.equal(done, false)
    assert.equal(m.subject, 'lt.evt.note.nodetest')
    assert.deepEqual([m.envelope.eventType, m.envelope.source, m.envelope.eventId], ['note', 'nodetest', 'node-note-1'])
    assert.deepEqual(JSON.parse(m.envelope.payload.toString()), { text: 'hello' })
    const again = await lt.publish('note', Buffer.from(JSON.stringify({ text: 'hello' })), { source: 'nodetest', eventId: 'node-note-1' })
    assert.equal(again.duplicate, true)
    assert.equal(again.sequence, r.sequence)
    await sub.close()
  })

  test('QoS 0 returns no stream; bad QoS and unstored subjects are ERR_PUBLISH', async () => {
    const r = await lt.publish('note', Buffer.from('{}'), { qos: 0 })
    assert.equal(r.stream, undefined)
    await assert.rejects(lt.publish('note', Buffer.from('{}'), { qos: 7 }), { code: 'ERR_PUBLISH' })
    await assert.rejects(lt.publish('note', Buffer.from('{}'), { subject: 'lt.analysis.nowhere' }), { code: 'ERR_PUBLISH' })
  })

  test('tlsCa trusts lt up --nats-tls; without it the certificate is refused', async () => {
    const secure = await startPlatform({ tls: true })
    try {
      await assert.rejects(Client.connect(secure.url, { timeoutMs: 2000 }), (e) => {
        assert.equal(e.code, 'ERR_CONNECT')
        assert.match(e.message, /UnknownIssuer/)
        return true
      })
      const c = await Client.connect(secure.url, { name: 'node-tls', tlsCa: join(secure.dir, 'nats', 'tls', 'ca.pem') })
      const r = await c.publish('note', Buffer.from('{}'), { source: 'node-tls' })
      assert.ok(r.sequence > 0, JSON.stringify(r))
    } finally {
      await secure.stop()
    }
  })

  test("an NKey seed connects as that lt up service, whose permissions the server enforces", async () => {
    const seed = readFileSync(join(platform.dir, 'nats', 'keys', 'collector.nk'), 'utf8')
    const collector = await Client.connect(platform.url, { name: 'node-as-collector', nkeySeed: seed, inboxPrefix: '_LT.collector' })
    const r = await collector.publish('note', Buffer.from('{}'), { source: 'node-nkey' })
    assert.ok(r.sequence > 0, JSON.stringify(r))
    await assert.rejects(collector.publish('x', Buffer.from('1'), { subject: 'xy.md.tick.node.0' }), (e) => {
      assert.equal(e.code, 'ERR_PUBLISH')
      assert.match(e.message, /not allowed/)
      return true
    })
    await assert.rejects(Client.connect(platform.url, { nkeySeed: 'SUnotaseed', timeoutMs: 2000 }), { code: 'ERR_CONNECT' })
    // lt up's local user (no credentials) may not publish to just any subject: a request there is
    // refused at once (not a timeout), and the error says so.
    await assert.rejects(lt.request('nobody.listens', Buffer.from('x'), 5000), (e) => {
      assert.equal(e.code, 'ERR_REQUEST')
      assert.match(e.message, /not allowed/)
      return true
    })
  })

  test('for await receives in order; break ends the subscription', async () => {
    const sub = await lt.subscribe('lt.evt.seq.>')
    for (let i = 0; i < 5; i++) await lt.publish('seq', Buffer.from(String(i)), { qos: 0, source: 'n' })
    await lt.flush()
    const got = []
    for await (const m of sub) {
      got.push(Number(m.envelope.payload.toString()))
      if (got.length === 5) break
    }
    assert.deepEqual(got, [0, 1, 2, 3, 4])
    // After break the iterator is finished: close() ran, the next next() is done.
    assert.deepEqual(await sub[Symbol.asyncIterator]().next(), { done: true, value: undefined })
  })

  test('close() ends a pending next()', async () => {
    const sub = await lt.subscribe('lt.evt.silent.>')
    const pending = sub[Symbol.asyncIterator]().next()
    await sub.close()
    const r = await pending
    assert.equal(r.done, true)
  })
})

describe('request/reply', () => {
  test('the query service answers a malformed request with a bad_request error body', async () => {
    const reply = await lt.request('lt.query.v1', Buffer.from('not json'), 5000)
    const body = JSON.parse(reply.toString())
    assert.equal(body.code, 'bad_request')
    assert.match(body.message, /not a query JSON/)
  })
})

describe('lake queries as Arrow', () => {
  test('query resolves with one Arrow IPC buffer; queryTable decodes it with typed columns', async () => {
    const buf = await lt.query('SELECT device_id, channel, voltage, seq FROM lake.battery_samples ORDER BY device_id, channel, seq')
    assert.ok(Buffer.isBuffer(buf) && buf.length > 0)
    const t = await queryTable(lt, 'SELECT device_id, channel, voltage, seq FROM lake.battery_samples ORDER BY device_id, channel, seq')
    assert.equal(t.numRows, SAMPLES)
    assert.deepEqual(t.schema.fields.map((f) => f.name), ['device_id', 'channel', 'voltage', 'seq'])
    assert.equal(typeof t.get(0).voltage, 'number')
    assert.ok(t.get(0).voltage > 2 && t.get(0).voltage < 5, String(t.get(0).voltage))
  })

  test('parameters, row limits and the DuckDB error codes', async () => {
    const t = await queryTable(lt, 'SELECT count(*) AS n FROM lake.battery_samples WHERE channel < ?', { params: [8] })
    const n = Number(t.get(0).n)
    assert.ok(n > 0 && n < SAMPLES, String(n))
    const limited = await queryTable(lt, 'SELECT * FROM lake.battery_samples', { maxRows: 10 })
    assert.equal(limited.numRows, 10)
    await assert.rejects(lt.query('SELEC nonsense'), (e) => e.code === 'ERR_QUERY_PARSE' && /syntax/i.test(e.message))
    await assert.rejects(lt.query('DROP TABLE lake.battery_samples'), { code: 'ERR_QUERY_NOT_READ_ONLY' })
    await assert.rejects(lt.query('SELECT * FROM lake.no_such_table'), (e) => e.code.startsWith('ERR_QUERY_'))
  })
})

describe('KV discovery', () => {
  test('nodes lists lt up; watchNodes starts with the present nodes as joined', async () => {
    const nodes = await lt.nodes()
    assert.ok(nodes.some((n) => n.role === 'lt-up'), JSON.stringify(nodes))
    const watch = await lt.watchNodes()
    const { value, done } = await nextWithin(watch)
    assert.equal(done, false)
    assert.equal(value.kind, 'joined')
    assert.ok(value.node.node_id, JSON.stringify(value.node))
  })
})

describe('the package surface', () => {
  test('instanceof Client holds for connected clients; the generated typings declare the API', async () => {
    assert.ok(lt instanceof Client)
    const { readFileSync } = await import('node:fs')
    const dts = readFileSync(new URL('../index.d.ts', import.meta.url), 'utf8')
    for (const decl of ['export declare class Client', 'static connect(', 'query(sql: string', 'watchNodes(', 'live(group: string', 'export declare class LiveGroup', 'export declare function decodeEnvelope']) {
      assert.ok(dts.includes(decl), `index.d.ts declares ${decl}`)
    }
  })
})

describe('the documented example', () => {
  test('docs/examples/node_quickstart.mjs runs against the platform', async () => {
    const { execFile } = await import('node:child_process')
    const { promisify } = await import('node:util')
    const script = new URL('../../../docs/examples/node_quickstart.mjs', import.meta.url).pathname
    const { stdout } = await promisify(execFile)(process.execPath, [script, platform.url], { timeout: 30_000 })
    assert.match(stdout, /stored in LT_EVENTS # \d+/)
    assert.match(stdout, /4 devices; first: \{ device_id: 'cycler-00', ah: \d/)
    assert.match(stdout, /lt\.evt\.note\.svc note \{"text":"again"\}/)
  })
})

describe('live groups from the aggregator', () => {
  let live
  before(async () => {
    live = await startPlatform({ live: true })
  })
  after(async () => {
    await live?.stop()
  })

  test('a venue followed from its snapshot and deltas; contracts; battery channels; coded errors', async () => {
    const c = await Client.connect(live.url)
    // The subject of the first delta names a group: xy.md.tick.<group>.<shard>.
    const sub = await c.subscribe('xy.md.tick.>')
    const first = (await nextWithin(sub, 30_000)).value
    await sub.close()
    const group = first.subject.split('.')[3]

    const ticks = await c.live(group)
    assert.equal(ticks.kind, 'ticks')
    assert.equal(ticks.group, group)
    const before = new Map((await ticks.records()).map((r) => [r.symbol, r.seq]))
    assert.ok(before.size > 0, 'the snapshot holds the venue')
    assert.ok((await ticks.follow(1500)) > 0, 'deltas applied')
    const rows = await ticks.records()
    assert.equal(rows.length, await ticks.size())
    for (const r of rows) {
      assert.equal(r.venue.toLowerCase(), group)
      assert.ok(r.seq >= (before.get(r.symbol) ?? 0), 'sequences only move forward')
      assert.ok(r.ts_exchange > 1.6e18, 'exchange timestamps in ns since the epoch')
    }
    assert.ok(rows.some((r) => r.seq > (before.get(r.symbol) ?? Infinity)), 'ticks kept coming')
    const one = rows[0]
    assert.deepEqual(await ticks.get(`${one.venue}.${one.symbol}`), one)
    assert.equal(await ticks.get('NOPE.x'), null)
    const change = await ticks.next(5000)
    assert.ok(change && ['applied', 'stale', 'resynced'].includes(change.kind), JSON.stringify(change))
    const stats = await ticks.stats()
    assert.ok(stats.applied > 0 && stats.rejected === 0, JSON.stringify(stats))

    const contracts = await (await c.live(group, { kind: 'contracts' })).records()
    const named = new Set(contracts.map((r) => r.symbol))
    assert.ok(rows.every((r) => named.has(r.symbol)), 'every ticking instrument has its contract')
    assert.ok(contracts.every((r) => r.multiplier > 0))

    const cells = await c.live('cells', { kind: 'battery' })
    await until('all 16 channels', async () => (await cells.follow(200)) >= 0 && (await cells.size()) === 16)

    await assert.rejects(c.live('nowhere'), { code: 'ERR_LIVE_NO_SNAPSHOT', message: /nowhere/ })
    await assert.rejects(c.live(group, { kind: 'bonds' }), { code: 'ERR_LIVE_BAD_ARGUMENT' })
    await assert.rejects(c.live('a.b'), { code: 'ERR_LIVE_BAD_ARGUMENT' })
  })
})
