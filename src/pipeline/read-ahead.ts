/**
 * An async iterator run ahead of its consumer: up to `depth` items are produced and held while the
 * consumer is busy with earlier ones. An export plans its next pieces of the bundle (index lookups,
 * node reads, the layout) while the piece before is being written: pulled one at a time, planning
 * and writing took turns on the main thread, each waiting for the other's I/O.
 *
 * An error of the producer is thrown to the consumer at its next take(), before any item still held
 * (what follows a failure is not wanted). stop() ends the producer at its next step (its `return()`
 * runs) and resolves, once it has, with the items not taken.
 */
export class ReadAhead<T> {
  private readonly items: T[] = []
  private ended = false
  private failed = false
  private error: unknown
  private stopped = false
  /** the consumer, waiting for an item */
  private taker: (() => void) | undefined
  /** the producer, waiting for room */
  private maker: (() => void) | undefined
  private readonly task: Promise<void>

  /** `onItem` sees each item as it is produced (e.g. to mark a promise in it as handled). */
  constructor(
    source: AsyncIterable<T>,
    private readonly depth: number,
    private readonly onItem?: (item: T) => void,
  ) {
    if (!(depth >= 1)) throw new RangeError('ReadAhead: depth must be at least 1')
    this.task = this.run(source[Symbol.asyncIterator]())
  }

  private async run(it: AsyncIterator<T>): Promise<void> {
    try {
      for (;;) {
        while (this.items.length >= this.depth && !this.stopped) await new Promise<void>((r) => (this.maker = r))
        if (this.stopped) {
          await it.return?.()
          return
        }
        const r = await it.next()
        if (r.done) return
        this.onItem?.(r.value)
        this.items.push(r.value)
        this.wakeTaker()
      }
    } catch (err) {
      this.failed = true
      this.error = err
    } finally {
      this.ended = true
      this.wakeTaker()
    }
  }

  private wakeTaker(): void {
    const w = this.taker
    this.taker = undefined
    w?.()
  }

  private wakeMaker(): void {
    const w = this.maker
    this.maker = undefined
    w?.()
  }

  /** The next item in order; undefined once the producer has ended. Throws what the producer failed with. */
  async take(): Promise<T | undefined> {
    for (;;) {
      if (this.failed) throw this.error
      if (this.items.length) {
        const item = this.items.shift()!
        this.wakeMaker()
        return item
      }
      if (this.ended) return undefined
      await new Promise<void>((r) => (this.taker = r))
    }
  }

  /**
   * Ends the producer at its next step and waits until it has (its errors are not thrown here);
   * returns the items it had produced that were not taken.
   */
  async stop(): Promise<T[]> {
    this.stopped = true
    this.wakeMaker()
    await this.task
    return this.items.splice(0)
  }
}
