/** how long a pass holds the event loop at most, in ms, before it yields (gc, verify) */
const SLICE_MS = 10

/**
 * Time slices for long passes that work synchronously between their awaits (gc's mark walks trees
 * with synchronous reads; its copy scans packs): `due()` says when the pass has held the event loop
 * for its slice, `next()` hands the loop back for one turn (timers and I/O of whoever shares the
 * process: an emulator's frames, a server's requests) and starts the next slice. `due()` reads the
 * clock once in `every` calls, so a pass can ask per entry.
 */
export class Slices {
  private start = performance.now()
  private calls = 0

  constructor(
    private readonly every = 32,
    private readonly ms = SLICE_MS,
  ) {}

  due(): boolean {
    if (++this.calls < this.every) return false
    this.calls = 0
    return performance.now() - this.start >= this.ms
  }

  async next(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve))
    this.calls = 0
    this.start = performance.now()
  }
}
