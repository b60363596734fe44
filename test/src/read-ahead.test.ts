/**
 * ReadAhead (src/pipeline/read-ahead.ts): items come out in order, the producer runs ahead by at
 * most `depth` untaken items, its error reaches the consumer ahead of the items still held, and
 * stop() ends it (its finally runs) and hands back what was not taken.
 */
import { describe, expect, it } from 'vitest'
import { ReadAhead } from '../../src/pipeline/read-ahead.js'

const tick = () => new Promise<void>((r) => setImmediate(r))

describe('ReadAhead', () => {
  it('gives every item in order and runs ahead by at most depth while the consumer is busy', async () => {
    let produced = 0
    let taken = 0
    let mostAhead = 0
    const seen: number[] = []
    async function* source() {
      for (let i = 0; i < 50; i++) {
        await tick()
        produced++
        mostAhead = Math.max(mostAhead, produced - taken)
        yield i
      }
    }
    const ahead = new ReadAhead(source(), 3, (i) => seen.push(i))
    const out: number[] = []
    for (let v = await ahead.take(); v !== undefined; v = await ahead.take()) {
      taken++
      out.push(v)
      // a slow consumer: the producer fills up to depth, never more
      for (let k = 0; k < 5; k++) await tick()
    }
    expect(out).toEqual([...Array(50).keys()])
    expect(seen).toEqual(out)
    // depth items held, plus the one being produced when the consumer took the last
    expect(mostAhead).toBeLessThanOrEqual(4)
    expect(mostAhead).toBeGreaterThanOrEqual(3)
    expect(await ahead.take()).toBeUndefined()
    expect(await ahead.stop()).toEqual([])
  })

  it('works ahead while the consumer waits on something else', async () => {
    let produced = 0
    async function* source() {
      for (let i = 0; i < 10; i++) {
        produced++
        yield i
      }
    }
    const ahead = new ReadAhead(source(), 4)
    expect(await ahead.take()).toBe(0)
    for (let k = 0; k < 5; k++) await tick()
    // taken 1, held 4: produced 5 without being asked
    expect(produced).toBe(5)
    await ahead.stop()
  })

  it("the producer's error comes before the items still held", async () => {
    async function* source() {
      yield 1
      yield 2
      throw Object.assign(new Error('planning failed'), { code: 'CKPT_NOT_FOUND' })
    }
    const ahead = new ReadAhead(source(), 8)
    for (let k = 0; k < 5; k++) await tick()
    await expect(ahead.take()).rejects.toThrow('planning failed')
    await expect(ahead.take()).rejects.toThrow('planning failed')
    await ahead.stop()
  })

  it('stop() ends the producer, runs its finally, and returns what was not taken', async () => {
    let closed = false
    let produced = 0
    async function* source() {
      try {
        for (let i = 0; ; i++) {
          produced++
          yield i
        }
      } finally {
        closed = true
      }
    }
    const ahead = new ReadAhead(source(), 2)
    expect(await ahead.take()).toBe(0)
    for (let k = 0; k < 5; k++) await tick()
    const left = await ahead.stop()
    expect(closed).toBe(true)
    expect(left).toEqual([1, 2])
    const at = produced
    for (let k = 0; k < 5; k++) await tick()
    expect(produced).toBe(at)
    expect(await ahead.take()).toBeUndefined()
  })

  it('depth below 1 is refused', () => {
    expect(() => new ReadAhead((async function* () {})(), 0)).toThrow(RangeError)
  })
})
