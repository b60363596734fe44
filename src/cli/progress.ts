import { esc, humanBytes } from './format.js'

/**
 * A single updating status line on stderr for commands that may take seconds (`add`, `restore`,
 * `export`, `import`): `ckpt add: checkpointing 3 regions ... 2.4s`, or with amounts a bar:
 * `ckpt import: [######------] 48% 410 MiB of 860 MiB, 380 MiB/s, ETA 1.2s`. Only on a TTY and never
 * with --json; it first appears after a short delay (fast commands never show it) and is erased by end().
 */
export class Progress {
  private phase = ''
  private readonly t0 = performance.now()
  private timer: NodeJS.Timeout | undefined
  private shown = false

  constructor(
    private readonly label: string,
    readonly enabled: boolean,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    if (!enabled) return
    this.timer = setInterval(() => this.render(), 250)
    this.timer.unref()
  }

  /** Whether progress belongs on this stream at all. */
  static wanted(json: boolean, stream: NodeJS.WriteStream = process.stderr): boolean {
    return stream.isTTY === true && !json
  }

  private done: number | undefined
  private total: number | undefined
  private unit = ''

  set(phase: string): void {
    this.phase = esc(phase)
    this.done = undefined
    this.total = undefined
    if (this.shown) this.render()
  }

  /** An amount of work done so far (bytes when unit is 'B'), of `total` when it is known. */
  amount(phase: string, done: number, total?: number, unit = 'B'): void {
    this.phase = esc(phase)
    this.done = done
    this.total = total
    this.unit = unit
  }

  private render(): void {
    if (!this.enabled) return
    const elapsed = (performance.now() - this.t0) / 1000
    const secs = elapsed.toFixed(1)
    let line = `${this.label}: ${this.phase} ${secs}s`
    if (this.done !== undefined) {
      const fmt = (n: number) => (this.unit === 'B' ? humanBytes(Math.round(n)) : `${n} ${this.unit}`)
      const rate = elapsed > 0 ? this.done / elapsed : 0
      const rateText = this.unit === 'B' ? `${humanBytes(Math.round(rate))}/s` : `${rate.toFixed(0)} ${this.unit}/s`
      if (this.total && this.total > 0) {
        const f = Math.min(1, this.done / this.total)
        const width = 20
        const bar = '#'.repeat(Math.round(f * width)).padEnd(width, '-')
        const eta = rate > 0 ? ((this.total - this.done) / rate).toFixed(1) : '?'
        line = `${this.label}: ${this.phase} [${bar}] ${(f * 100).toFixed(0)}% ${fmt(this.done)} of ${fmt(this.total)}, ${rateText}, ETA ${eta}s`
      } else {
        line = `${this.label}: ${this.phase} ${fmt(this.done)}, ${rateText}, ${secs}s`
      }
    }
    const cols = this.stream.columns
    if (cols && line.length > cols - 1) line = line.slice(0, cols - 1)
    this.stream.write('\r\x1b[K' + line)
    this.shown = true
  }

  /** Stops updating and erases the line (the cursor is left at the start of an empty line). */
  end(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    if (this.shown) this.stream.write('\r\x1b[K')
    this.shown = false
  }
}
