import { describe, expect, it } from 'vitest'
import { FrameCoalescer } from './frame'

/** A frame clock the test advances by hand. */
function frames() {
  let queue: Array<() => void> = []
  return {
    schedule: (cb: () => void) => void queue.push(cb),
    get waiting() {
      return queue.length
    },
    tick() {
      const q = queue
      queue = []
      for (const cb of q) cb()
    },
  }
}

describe('FrameCoalescer', () => {
  it('delivers each changed key once per frame, however often it changed', () => {
    const clock = frames()
    const got: string[][] = []
    const c = new FrameCoalescer((keys) => got.push([...keys]), clock.schedule)
    c.add('a')
    c.add('b')
    c.add('a')
    expect(clock.waiting).toBe(1)
    expect(got).toEqual([])
    clock.tick()
    expect(got).toEqual([['a', 'b']])
    expect(c.size).toBe(0)
    expect(c.frames).toBe(1)
  })

  it('schedules no frame while nothing changed, and one again after a change', () => {
    const clock = frames()
    const got: string[][] = []
    const c = new FrameCoalescer((keys) => got.push([...keys]), clock.schedule)
    clock.tick()
    expect(clock.waiting).toBe(0)
    c.add('x')
    clock.tick()
    c.add('y')
    expect(clock.waiting).toBe(1)
    clock.tick()
    expect(got).toEqual([['x'], ['y']])
  })

  it('keeps keys (bounded by the key count) while no frame comes, and delivers them together', () => {
    const clock = frames()
    const got: string[][] = []
    const c = new FrameCoalescer((keys) => got.push([...keys]), clock.schedule)
    for (let i = 0; i < 10_000; i++) c.add(`k${i % 50}`)
    expect(c.size).toBe(50)
    expect(clock.waiting).toBe(1)
    clock.tick()
    expect(got).toHaveLength(1)
    expect(got[0]).toHaveLength(50)
  })

  it('a key changed during delivery waits for the next frame', () => {
    const clock = frames()
    const got: string[][] = []
    const c = new FrameCoalescer((keys) => {
      got.push([...keys])
      if (got.length === 1) c.add('late')
    }, clock.schedule)
    c.add('a')
    clock.tick()
    expect(got).toEqual([['a']])
    expect(c.size).toBe(1)
    clock.tick()
    expect(got).toEqual([['a'], ['late']])
  })
})
