import fs from 'node:fs'
import path from 'node:path'

export function median(xs: number[]): number {
  return quantile(xs, 0.5)
}

export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const pos = (s.length - 1) * q
  const lo = Math.floor(pos)
  const hi = Math.ceil(pos)
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo)
}

export const MiB = 1 << 20

export function fmtBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB`
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${n} B`
}

/**
 * Peak RSS of this process. VmHWM belongs to the address space (a new one at exec), unlike
 * getrusage's maxRSS, which a child started from a large parent inherits across fork and exec.
 */
/** CPU time of this process's main thread so far, ms (schedstat: nanoseconds, Linux). */
export function mainCpuMs(): number {
  return Number(fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6
}

/** CPU time of the whole process so far (every thread: workers, libuv's pool, GC), ms. */
export function processCpuMs(): number {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

export function peakRssMiB(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))
    if (m) return Number(m[1]) / 1024
  } catch {}
  return process.resourceUsage().maxRSS / 1024
}

export function table(rows: string[][]): string {
  const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)))
  return rows.map((r, i) => {
    const line = '| ' + r.map((x, c) => x.padEnd(w[c]!)).join(' | ') + ' |'
    return i === 0 ? line + '\n|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|' : line
  }).join('\n')
}

/** Bytes of the files under a directory (apparent sizes, recursively). */
export function dirBytes(d: string): number {
  return fs.readdirSync(d, { withFileTypes: true }).reduce((n, e) => n + (e.isDirectory() ? dirBytes(path.join(d, e.name)) : fs.statSync(path.join(d, e.name)).size), 0)
}
