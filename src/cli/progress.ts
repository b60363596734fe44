/**
 * A single updating status line on stderr for commands that may take seconds (`add`, `restore`):
 * `ckpt add: checkpointing 3 regions ... 2.4s`. Only on a TTY and never with --json; it first appears
 * after a short delay (fast commands never show it) and is erased by end().
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

  set(phase: string): void {
    this.phase = phase
    if (this.shown) this.render()
  }

  private render(): void {
    if (!this.enabled) return
    const secs = ((performance.now() - this.t0) / 1000).toFixed(1)
    let line = `${this.label}: ${this.phase} ${secs}s`
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
