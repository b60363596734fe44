import { CkptError } from '../codecs/errors.js'
import { copyOf } from '../codecs/bytes.js'
import { compareBytes, inRange, type KV, type KVOp, type KVRange } from './kv.js'

/** Sorted in-memory KV for unit tests; same semantics as LevelKV (copies in and out, ordered bytes). */
export class MemoryKV implements KV {
  private readonly map = new Map<string, [Uint8Array, Uint8Array]>()
  private sorted: [Uint8Array, Uint8Array][] | undefined
  private closed = false

  private check(): void {
    if (this.closed) throw new CkptError('CKPT_CLOSED', 'memory KV is closed')
  }

  async get(key: Uint8Array): Promise<Uint8Array | undefined> {
    return this.getSync(key)
  }

  getSync(key: Uint8Array): Uint8Array | undefined {
    this.check()
    const e = this.map.get(Buffer.from(key).toString('latin1'))
    return e ? copyOf(e[1]) : undefined
  }

  async getMany(keys: Uint8Array[]): Promise<(Uint8Array | undefined)[]> {
    return keys.map((k) => this.getSync(k))
  }

  async batch(ops: KVOp[]): Promise<void> {
    this.check()
    for (const op of ops) {
      const k = Buffer.from(op.key).toString('latin1')
      if (op.type === 'put') this.map.set(k, [copyOf(op.key), copyOf(op.value)])
      else this.map.delete(k)
    }
    this.sorted = undefined
  }

  async *iterate(range: KVRange): AsyncIterable<[Uint8Array, Uint8Array]> {
    this.check()
    this.sorted ??= [...this.map.values()].sort((a, b) => compareBytes(a[0], b[0]))
    const rows = this.sorted.filter(([k]) => inRange(k, range))
    if (range.reverse) rows.reverse()
    const limit = range.limit === undefined || range.limit < 0 ? Infinity : range.limit
    let n = 0
    for (const [k, v] of rows) {
      if (n++ >= limit) return
      yield [copyOf(k), copyOf(v)]
    }
  }

  async close(): Promise<void> {
    this.closed = true
  }
}
