import fs from 'node:fs'
import { esc, humanBytes } from './format.js'

/** What one status line shows (progressLine renders it). */
export interface ProgressState {
  /** `ckpt restore` */
  label: string
  /** what is being done (escaped by the caller) */
  phase: string
  /** seconds since the command started */
  elapsed: number
  /** work done so far, when it is counted */
  done?: number
  /** all the work, when it is known: a bar and a percentage */
  total?: number
  /** what done and total count: 'B' (bytes, shown as KiB, MiB...) or a word (`packs`) */
  unit?: string
  /** the terminal's width: the line is cut to fit */
  columns?: number
}

/**
 * The status line: `ckpt add: checkpointing vm@5 (1.0 GiB) 2.4s`; with an amount `ckpt import: 410 MiB,
 * 380 MiB/s, 1.1s`; with a total a bar and a percentage: `ckpt restore: region ram [######----------]
 * 30% 307 MiB of 1.00 GiB, 380 MiB/s, ETA 1.9s`. The percentage stays below 100 until done reaches total.
 */
export function progressLine(s: ProgressState): string {
  const secs = s.elapsed.toFixed(1)
  const unit = s.unit ?? 'B'
  let line = `${s.label}: ${s.phase} ${secs}s`
  if (s.done !== undefined) {
    const fmt = (n: number) => (unit === 'B' ? humanBytes(Math.round(n)) : `${n} ${unit}`)
    const rate = s.elapsed > 0 ? s.done / s.elapsed : 0
    const rateText = unit === 'B' ? `${humanBytes(Math.round(rate))}/s` : `${rate.toFixed(0)} ${unit}/s`
    if (s.total !== undefined && s.total > 0) {
      const f = Math.min(1, s.done / s.total)
      const width = 20
      const bar = '#'.repeat(Math.round(f * width)).padEnd(width, '-')
      const pct = s.done >= s.total ? 100 : Math.min(99, Math.floor(f * 100))
      const eta = rate > 0 ? (Math.max(0, s.total - s.done) / rate).toFixed(1) : '?'
      line = `${s.label}: ${s.phase} [${bar}] ${pct}% ${fmt(Math.min(s.done, s.total))} of ${fmt(s.total)}, ${rateText}, ETA ${eta}s`
    } else {
      line = `${s.label}: ${s.phase} ${fmt(s.done)}, ${rateText}, ${secs}s`
    }
  }
  if (s.columns && line.length > s.columns - 1) line = line.slice(0, s.columns - 1)
  return line
}

/**
 * The bytes a region restore has put into its temporary file so far (`TARGET.ckpt-partial-PID`, written
 * sparse: its allocated blocks), at most `size`; 0 before the file exists.
 */
export function partialBytes(temp: string, size: number): number {
  try {
    return Math.min(size, fs.statSync(temp).blocks * 512)
  } catch {
    return 0
  }
}

/**
 * A single updating status line on stderr for commands that may take seconds (`add`, `restore`,
 * `export`, `import`, `verify`, `repair`, `gc`): a phase and the time, or with amounts (and a total) a
 * bar as progressLine() draws it. Only on a TTY and never with --json; it first appears after a short
 * delay (fast commands never show it) and is erased by end().
 */
export class Progress {
  private phase = ''
  private readonly t0 = performance.now()
  private timer: NodeJS.Timeout | undefined
  private shown = false
  private done: number | undefined
  private total: number | undefined
  private unit = ''
  private measure: (() => number) | undefined

  constructor(
    private readonly label: string,
    readonly enabled: boolean,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    if (!enabled) return
    this.timer = setInterval(() => this.render(), 250)
    this.timer.unref()
  }

  /** Whether progress belongs on this stream at all: a terminal, and neither --json nor --quiet. */
  static wanted(opts: { json?: boolean; quiet?: boolean }, stream: Pick<NodeJS.WriteStream, 'isTTY'> = process.stderr): boolean {
    return stream.isTTY === true && opts.json !== true && opts.quiet !== true
  }

  set(phase: string): void {
    this.phase = esc(phase)
    this.done = undefined
    this.total = undefined
    this.measure = undefined
    if (this.shown) this.render()
  }

  /**
   * An amount of work done so far (bytes when unit is 'B'), of `total` when it is known. `measure`,
   * when given, is asked for the amount done at each redraw (a file being written by worker threads).
   */
  amount(phase: string, done: number, total?: number, unit = 'B', measure?: () => number): void {
    this.phase = esc(phase)
    this.done = done
    this.total = total
    this.unit = unit
    this.measure = measure
  }

  private render(): void {
    if (!this.enabled) return
    if (this.measure) this.done = Math.max(this.done ?? 0, this.measure())
    const state: ProgressState = { label: this.label, phase: this.phase, elapsed: (performance.now() - this.t0) / 1000, unit: this.unit, columns: this.stream.columns }
    if (this.done !== undefined) Object.assign(state, { done: this.done, total: this.total })
    this.stream.write('\r\x1b[K' + progressLine(state))
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
