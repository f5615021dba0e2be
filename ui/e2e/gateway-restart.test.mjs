// A gateway restart in a real browser: three tabs on lt-gateway (a process of its own next to
// `lt up`), the gateway is killed and started again on the same port; every tab's view must be
// connected and receiving deltas again within 3 s of the restart (seed 002: recover ≤ 3 s).
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium } from 'playwright-core'
import { artifacts, chromiumPath, feeds, freePort, gwBin, ltBin, ui, until } from './helpers.mjs'

const listening = (port) =>
  new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => {
      s.destroy()
      resolve(true)
    })
    s.on('error', () => resolve(false))
  })

const children = []
after(() => children.forEach((c) => c.kill('SIGKILL')))

test('views recover within 3 s after the gateway restarts', async () => {
  const [nats, http, upGw, gw] = [await freePort(), await freePort(), await freePort(), await freePort()]
  const dir = mkdtempSync(join(tmpdir(), 'lt-ui-restart-'))
  const up = spawn(ltBin, [
    'up', '--data-dir', dir, '--nats-port', String(nats), '--nats-http-port', String(http),
    '--udp', '127.0.0.1:0', '--metrics-addr', 'off', '--gateway-addr', `127.0.0.1:${upGw}`,
    '--tick-rate', '1000', '--no-flow',
  ], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.push(up)
  let out = ''
  up.stdout.on('data', (d) => (out += d))
  await until('lt up serving', () => out.includes('UI: http://'))
  const secret = join(dir, 'secret.txt')
  writeFileSync(secret, readFileSync(join(dir, 'gateway.secret')))
  const token = execFileSync(gwBin, ['--jwt-secret-file', secret, '--dev-token', 'xy.md.>']).toString().trim()
  // As `lt up` deploys it: the gateway's own NATS user (its NKey and inbox prefix). Its log is
  // kept: nats-server must refuse it nothing (the ACL denials it audits included).
  let gatewayLog = ''
  const startGateway = () => {
    const g = spawn(gwBin, [
      '--jwt-secret-file', secret, '--listen', `127.0.0.1:${gw}`, '--ui-dir', join(ui, 'dist'),
      '--nats-url', `nats://127.0.0.1:${nats}`, '--log', 'warn', '--log-format', 'json',
      '--nkey-seed-file', join(dir, 'nats', 'keys', 'gateway.nk'), '--inbox-prefix', '_LT.gateway',
    ], { stdio: ['ignore', 'ignore', 'pipe'] })
    g.stderr.on('data', (d) => {
      gatewayLog += d
      process.stderr.write(d)
    })
    children.push(g)
    return g
  }
  let gateway = startGateway()
  await until('the gateway listening', () => listening(gw))

  const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] })
  try {
    const context = await browser.newContext()
    const pages = []
    for (let i = 0; i < 3; i++) {
      const p = await context.newPage()
      await p.goto(`http://127.0.0.1:${gw}/?token=${token}`)
      pages.push(p)
    }
    const feed = () => feeds(pages)
    await until('every tab live', async () => (await feed()).every((f) => f?.state === "connected" && f.ticks >= 150))

    // The hub's snapshot rebuilds so far (first loads); the restart must add at least one.
    // (The hub sends its stats once a second: wait for one that counts the first loads.)
    await until('the first loads counted as rebuilds', async () => (await feed())[0].rebuilds >= 1, 5_000)
    const rebuildsBefore = (await feed())[0].rebuilds
    gateway.kill('SIGKILL')
    await new Promise((r) => gateway.on('exit', r))
    await until('every tab notices', async () => (await feed()).every((f) => f.state === 'reconnecting'))
    const before = (await feed()).map((f) => f.tickBatches)
    gateway = startGateway()
    const t0 = Date.now()
    await until(
      'every tab connected and receiving deltas again',
      async () => (await feed()).every((f, i) => f.state === 'connected' && f.tickBatches > before[i]),
      10_000,
    )
    const recovered = Date.now() - t0
    console.log(`views recovered ${recovered} ms after the gateway restarted`)
    assert.ok(recovered < 3000, `recovered in ${recovered} ms`)
    const health = await (await fetch(`http://127.0.0.1:${gw}/healthz`)).json()
    assert.equal(health.ws_active, 1, 'still one WebSocket for the three tabs')
    await pages[0].screenshot({ path: join(artifacts, 'after-restart.png') })
    // The system view shows the re-reads after the reconnect and how long the last one took
    // (seed 002: a rebuild after a disconnect takes ≤ 1 s).
    await until('stats counting the reconnect\'s rebuilds', async () => (await feed())[0].rebuilds > rebuildsBefore, 5_000)
    await pages[2].evaluate(() => (location.hash = '#/system'))
    const rebuilds = pages[2].locator('[data-testid=rebuilds]')
    await until('the system view showing the rebuilds', async () => /rebuilds .*: \d+ · last \d+ ms/.test((await rebuilds.textContent()) ?? ''), 5_000)
    const text = (await rebuilds.textContent()) ?? ''
    console.log(`system view after the restart: ${text}`)
    const [, count, last] = text.match(/: (\d+) · last (\d+) ms/) ?? []
    assert.ok(Number(count) > rebuildsBefore, `rebuild count ${count} > ${rebuildsBefore} before the restart`)
    assert.ok(Number(last) <= 1000, `the last rebuild took ${last} ms (≤ 1 s)`)
    assert.match(text, /waiting now 0/)
    // The dev token allows only xy.md.>: the UI's other subscriptions were denied and audited to
    // lt.audit.acl.denied, which the gateway's user may publish; nats-server refused nothing.
    assert.match(gatewayLog, /"code":"forbidden"/, 'ACL denials audited')
    assert.doesNotMatch(gatewayLog, /nats_permission_denied/, 'no operation refused by nats-server')
  } finally {
    await browser.close()
    gateway.kill('SIGTERM')
    up.kill('SIGINT')
    await new Promise((r) => up.on('exit', r))
  }
})
