/**
 * The store's one-at-a-time pipeline with backpressure: checkpoints (and the operations that must not
 * interleave with them: imports, gc, catalog changes) run in call order; the copies checkpoints hold
 * while they wait are counted, and past `maxPending` bytes a new checkpoint waits for room before it
 * copies anything.
 */
import PQueue from 'p-queue'

export class Pipeline {
  private readonly queue = new PQueue({ concurrency: 1 })
  private pendingBytes = 0
  private roomWaiters: (() => void)[] = []

  constructor(private readonly maxPending: number) {}

  hasRoom(bytes: number): boolean {
    return this.pendingBytes === 0 || this.pendingBytes + bytes <= this.maxPending
  }

  waitForRoom(bytes: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.hasRoom(bytes)) resolve()
        else this.roomWaiters.push(check)
      }
      check()
    })
  }

  /** Runs fn in turn, counting its copies as pending until it is done. */
  enqueue<T>(bytes: number, fn: () => Promise<T>): Promise<T> {
    this.pendingBytes += bytes
    return this.queue.add(fn, { throwOnTimeout: true }).finally(() => {
      this.pendingBytes -= bytes
      const w = this.roomWaiters
      this.roomWaiters = []
      for (const f of w) f()
    }) as Promise<T>
  }

  onIdle(): Promise<void> {
    return this.queue.onIdle()
  }
}
