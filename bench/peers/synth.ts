/**
 * A deterministic synthetic series of VM checkpoints: each checkpoint is a directory holding full
 * images `ram.bin` (4 KiB pages) and `disk.raw` (64 KiB clusters). Step i+1 is step i plus
 * `dirtyPages` page writes and `dirtyClusters` cluster writes; `hotShare` of the writes fall in a
 * fixed hot set (`hotFrac` of the pages/clusters). New content: zero 40%, bytes of real files 30%
 * (regular files of at least 64 KiB under `corpusRoot`, /usr/lib by default), text 20%, random 10%.
 * The first checkpoint fills every page/cluster with the same mix. All-zero 4 KiB blocks are
 * written as holes.
 *
 * Same spec (seed included) and same corpus → the same bytes: decisions come from a seeded sfc32
 * generator, random bytes from an AES-128-CTR keystream keyed by the seed. The corpus is a list of
 * files, so installing packages under /usr/lib changes the series; `corpusFingerprint` names it.
 *
 * As a program (eager mode, the whole series on disk):
 *   node dist/bench/peers/synth.js [--series small|default|tiny] [--seed N] [--ram-mib N] [--disk-mib N]
 *        [--count N] [--dirty-pages N] [--dirty-clusters N] [--corpus DIR] --out DIR
 * The harness (bench/peers/run.ts) uses the lazy mode instead: each checkpoint is built in tmpfs
 * just before it is ingested (`SyntheticSeries.seek` + `write`).
 */
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const PAGE = 4096
export const CLUSTER = 65536

export interface SeriesSpec {
  name: string
  ramMiB: number
  diskMiB: number
  count: number
  dirtyPages: number
  dirtyClusters: number
  hotFrac: number
  hotShare: number
  seed: number
  corpusRoot: string
}

const BASE = { dirtyPages: 1000, dirtyClusters: 20, hotFrac: 0.1, hotShare: 0.8, seed: 1, corpusRoot: '/usr/lib' }
/** the named series: the default (S of the project's benches), the small one, and a tiny one for tests */
export const SERIES: Record<string, SeriesSpec> = {
  default: { name: 'default', ramMiB: 256, diskMiB: 512, count: 100, ...BASE },
  small: { name: 'small', ramMiB: 64, diskMiB: 128, count: 30, ...BASE },
  tiny: { name: 'tiny', ramMiB: 1, diskMiB: 1, count: 3, ...BASE, dirtyPages: 20, dirtyClusters: 2 },
}

/** the file names of one checkpoint, sorted, and the unit each is written in */
export const FILES: { name: string; unit: number }[] = [
  { name: 'disk.raw', unit: CLUSTER },
  { name: 'ram.bin', unit: PAGE },
]
/** the block size the `ideal` row and ckpt use for a file: 4 KiB for ram*, 64 KiB for the others */
export const chunkOf = (file: string): number => (file.startsWith('ram') ? PAGE : CLUSTER)

// ---- deterministic sources

/** sfc32, seeded through splitmix32: fast, small, good enough for choosing pages and kinds */
export class Rng {
  private a: number
  private b: number
  private c: number
  private d = 1
  constructor(seed: number) {
    let s = seed >>> 0
    const next = () => {
      s = (s + 0x9e3779b9) >>> 0
      let z = s
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
      return (z ^ (z >>> 16)) >>> 0
    }
    this.a = next()
    this.b = next()
    this.c = next()
    for (let i = 0; i < 12; i++) this.u32()
  }
  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0
    this.d = (this.d + 1) | 0
    this.a = this.b ^ (this.b >>> 9)
    this.b = (this.c + (this.c << 3)) | 0
    this.c = (this.c << 21) | (this.c >>> 11)
    this.c = (this.c + t) | 0
    return t >>> 0
  }
  /** a float in [0, 1) */
  next(): number {
    return this.u32() / 4294967296
  }
  /** an integer in [0, n) (n up to 2^53) */
  int(n: number): number {
    const x = n <= 4294967296 ? this.next() : (this.u32() + this.next()) / 4294967296
    return Math.min(n - 1, Math.floor(x * n))
  }
}

interface Corpus {
  paths: string[]
  sizes: number[]
  cum: number[]
  total: number
  fingerprint: string
}
const corpusMemo = new Map<string, Corpus>()

/** regular readable files ≥ 64 KiB under root, walked in byte order of names (no __pycache__) */
export function corpusOf(root: string): Corpus {
  const memo = corpusMemo.get(root)
  if (memo) return memo
  const paths: string[] = []
  const sizes: number[] = []
  const walk = (d: string) => {
    let names: string[]
    try {
      names = fs.readdirSync(d)
    } catch {
      return
    }
    for (const n of names.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))) {
      const p = path.join(d, n)
      let st: fs.Stats
      try {
        st = fs.lstatSync(p)
      } catch {
        continue
      }
      if (st.isDirectory()) {
        if (n !== '__pycache__') walk(p)
      } else if (st.isFile() && st.size >= CLUSTER) {
        try {
          fs.accessSync(p, fs.constants.R_OK)
        } catch {
          continue
        }
        paths.push(p)
        sizes.push(st.size)
      }
    }
  }
  walk(root)
  if (paths.length === 0) throw new Error(`peers: no file of at least 64 KiB under ${root} (the real-file content)`)
  const cum: number[] = []
  let total = 0
  const h = crypto.createHash('sha256')
  for (let i = 0; i < paths.length; i++) {
    total += sizes[i]!
    cum.push(total)
    h.update(`${paths[i]}\t${sizes[i]}\n`)
  }
  const c = { paths, sizes, cum, total, fingerprint: h.digest('hex').slice(0, 16) }
  corpusMemo.set(root, c)
  return c
}

const LETTERS = 'etaoinshrdlcumwfgypbvkjxqz'
const TOKENS = ['\n', '\n', '.\n', ',', '0', '1', '42', '2024', 'error:', 'INFO', '=', '{', '}']

/** where page/cluster contents come from; every draw advances the generator in a fixed order */
class Content {
  private readonly rng: Rng
  private readonly keystream: crypto.Cipher
  private readonly corpus: Corpus
  private readonly fds = new Map<number, number>()
  private readonly words: Buffer[] = []
  private readonly pick = new Uint16Array(65536)

  constructor(spec: SeriesSpec, rng: Rng) {
    this.rng = rng
    this.corpus = corpusOf(spec.corpusRoot)
    const key = crypto.createHash('sha256').update(`ckpt-peers-synthetic:${spec.seed}`).digest()
    this.keystream = crypto.createCipheriv('aes-128-ctr', key.subarray(0, 16), Buffer.alloc(16))
    // a vocabulary of 4,000 made-up words (letters by English frequency) plus a few tokens, drawn Zipf-like
    const lw = [...LETTERS].map((_, k) => 1 / (k + 1) ** 0.9)
    const lsum = lw.reduce((a, b) => a + b, 0)
    const letter = () => {
      let u = rng.next() * lsum
      for (let k = 0; k < lw.length; k++) if ((u -= lw[k]!) < 0) return LETTERS[k]!
      return 'e'
    }
    for (let i = 0; i < 4000; i++) {
      const n = 2 + rng.int(9)
      let w = ''
      for (let k = 0; k < n; k++) w += letter()
      this.words.push(Buffer.from(w))
    }
    for (const t of TOKENS) this.words.push(Buffer.from(t))
    const ranks = this.words.map((_, i) => i)
    for (let i = ranks.length - 1; i > 0; i--) {
      const j = rng.int(i + 1)
      ;[ranks[i], ranks[j]] = [ranks[j]!, ranks[i]!]
    }
    const wt = ranks.map((r) => 1 / (r + 1) ** 1.05)
    const sum = wt.reduce((a, b) => a + b, 0)
    let acc = 0
    let slot = 0
    for (let i = 0; i < wt.length; i++) {
      acc += wt[i]! / sum
      const end = i === wt.length - 1 ? 65536 : Math.min(65536, Math.round(acc * 65536))
      for (; slot < end; slot++) this.pick[slot] = i
    }
  }

  /** 0 zero, 1 real file, 2 text, 3 random: 40 / 30 / 20 / 10 % */
  kind(): number {
    const u = this.rng.next()
    return u < 0.4 ? 0 : u < 0.7 ? 1 : u < 0.9 ? 2 : 3
  }

  /** n bytes for kind k (undefined for zero) */
  make(k: number, n: number): Buffer | undefined {
    if (k === 0) return undefined
    if (k === 1) return this.file(n)
    if (k === 2) return this.text(n)
    return this.keystream.update(Buffer.alloc(n))
  }

  private file(n: number): Buffer {
    const c = this.corpus
    const u = this.rng.int(c.total)
    let lo = 0
    let hi = c.cum.length - 1
    while (lo < hi) {
      const m = (lo + hi) >>> 1
      if (c.cum[m]! > u) hi = m
      else lo = m + 1
    }
    const start = c.cum[lo]! - c.sizes[lo]!
    const off = Math.min(Math.floor((u - start) / n) * n, Math.floor((c.sizes[lo]! - n) / n) * n)
    let fd = this.fds.get(lo)
    if (fd === undefined) {
      if (this.fds.size > 512) this.close()
      fd = fs.openSync(c.paths[lo]!, 'r')
      this.fds.set(lo, fd)
    }
    const b = Buffer.alloc(n)
    fs.readSync(fd, b, 0, n, off)
    return b
  }

  private text(n: number): Buffer {
    const b = Buffer.allocUnsafe(n)
    let o = 0
    while (o < n) {
      const w = this.words[this.pick[this.rng.u32() >>> 16]!]!
      for (let k = 0; k < w.length && o < n; k++) b[o++] = w[k]!
      if (o < n) b[o++] = 0x20
    }
    return b
  }

  close(): void {
    for (const fd of this.fds.values()) fs.closeSync(fd)
    this.fds.clear()
  }
}

// ---- images and the series

class Image {
  readonly data: Buffer
  /** 1 where the 4 KiB block is not all zero */
  readonly nonzero: Uint8Array
  readonly count: number
  constructor(
    bytes: number,
    readonly unit: number,
  ) {
    this.data = Buffer.alloc(bytes)
    this.nonzero = new Uint8Array(bytes / PAGE)
    this.count = bytes / unit
  }
  put(idx: number, content: Buffer | undefined): void {
    const o = idx * this.unit
    const pages = this.unit / PAGE
    if (!content) {
      this.data.fill(0, o, o + this.unit)
      this.nonzero.fill(0, idx * pages, (idx + 1) * pages)
      return
    }
    content.copy(this.data, o, 0, this.unit)
    for (let p = 0; p < pages; p++) this.nonzero[idx * pages + p] = isZero(this.data, o + p * PAGE) ? 0 : 1
  }
  /** the image, its all-zero 4 KiB blocks as holes */
  write(file: string): void {
    const fd = fs.openSync(file, 'w', 0o644)
    try {
      const nz = this.nonzero
      for (let p = 0; p < nz.length; ) {
        if (!nz[p]) {
          p++
          continue
        }
        let e = p
        while (e < nz.length && nz[e]) e++
        for (let off = p * PAGE, end = e * PAGE; off < end; ) off += fs.writeSync(fd, this.data, off, end - off, off)
        p = e
      }
      fs.ftruncateSync(fd, this.data.length)
    } finally {
      fs.closeSync(fd)
    }
  }
}

const ZERO_PAGE = Buffer.alloc(PAGE)
const isZero = (b: Buffer, o: number) => b.compare(ZERO_PAGE, 0, PAGE, o, o + PAGE) === 0

/** a draw of k distinct indices in [0, n) (partial Fisher-Yates) */
function hotSet(rng: Rng, n: number, k: number): Uint32Array {
  const a = new Uint32Array(n)
  for (let i = 0; i < n; i++) a[i] = i
  for (let i = 0; i < k; i++) {
    const j = i + rng.int(n - i)
    const t = a[i]!
    a[i] = a[j]!
    a[j] = t
  }
  return a.slice(0, k)
}

/** the series as a state machine: `seek(i)` moves forward to checkpoint i (0-based) */
export class SyntheticSeries {
  readonly spec: SeriesSpec
  readonly fingerprint: string
  /** the checkpoint the images hold, -1 before the first seek */
  step = -1
  /** distinct pages/clusters written by each step (index 0: the initial fill) */
  readonly distinctWrites: Record<string, number>[] = []
  private readonly rng: Rng
  private readonly content: Content
  private readonly images = new Map<string, { img: Image; writes: number; hot: Uint32Array }>()
  private readonly touched = new Map<string, number[]>()

  constructor(spec: SeriesSpec) {
    this.spec = spec
    this.rng = new Rng(spec.seed)
    this.content = new Content(spec, this.rng)
    this.fingerprint = corpusOf(spec.corpusRoot).fingerprint
    for (const f of FILES) {
      const mib = f.name.startsWith('ram') ? spec.ramMiB : spec.diskMiB
      const img = new Image(mib * 1024 * 1024, f.unit)
      const hot = hotSet(this.rng, img.count, Math.max(1, Math.floor(img.count * spec.hotFrac)))
      this.images.set(f.name, { img, writes: f.unit === PAGE ? spec.dirtyPages : spec.dirtyClusters, hot })
    }
  }

  static checkpointName(i: number): string {
    return `ckpt-${String(i).padStart(4, '0')}`
  }

  /** the current image of a file (a view: it changes with the next seek) */
  image(file: string): Buffer {
    return this.images.get(file)!.img.data
  }

  /**
   * the units (pages or clusters) of a file written by the step that made the current checkpoint,
   * sorted: what an emulator's dirty log would report; undefined for the first checkpoint
   */
  dirty(file: string): number[] | undefined {
    return this.step > 0 ? this.touched.get(file) : undefined
  }

  seek(i: number): void {
    if (i < this.step || i >= this.spec.count) throw new Error(`peers: checkpoint ${i} asked after ${this.step} (of ${this.spec.count})`)
    while (this.step < i) this.advance()
  }

  private advance(): void {
    const stats: Record<string, number> = {}
    for (const [name, { img, writes, hot }] of this.images) {
      if (this.step < 0) {
        for (let i = 0; i < img.count; i++) {
          const k = this.content.kind()
          if (k) img.put(i, this.content.make(k, img.unit))
        }
        stats[name] = img.count
        continue
      }
      const touched = new Set<number>()
      for (let w = 0; w < writes; w++) {
        const idx = this.rng.next() < this.spec.hotShare ? hot[this.rng.int(hot.length)]! : this.rng.int(img.count)
        img.put(idx, this.content.make(this.content.kind(), img.unit))
        touched.add(idx)
      }
      stats[name] = touched.size
      this.touched.set(name, [...touched].sort((a, b) => a - b))
    }
    this.step++
    this.distinctWrites.push(stats)
  }

  /** writes the current checkpoint as DIR (built in DIR.tmp, renamed) */
  write(dir: string): void {
    const tmp = `${dir}.tmp`
    fs.rmSync(tmp, { recursive: true, force: true })
    fs.mkdirSync(tmp, { recursive: true })
    for (const f of FILES) this.images.get(f.name)!.img.write(path.join(tmp, f.name))
    fs.rmSync(dir, { recursive: true, force: true })
    fs.renameSync(tmp, dir)
  }

  close(): void {
    this.content.close()
  }
}

/** a spec from a series name plus overrides (--seed, --count, ...) */
export function specOf(name: string, over: Partial<SeriesSpec> = {}): SeriesSpec {
  const base = SERIES[name]
  if (!base) throw new Error(`peers: unknown series "${name}" (known: ${Object.keys(SERIES).join(', ')})`)
  const s = { ...base, ...Object.fromEntries(Object.entries(over).filter(([, v]) => v !== undefined)) }
  if (s.corpusRoot === base.corpusRoot && process.env.PEERS_CORPUS) s.corpusRoot = process.env.PEERS_CORPUS
  return s
}

/** what a series directory's manifest.json holds */
export function manifestOf(spec: SeriesSpec, fingerprint: string): Record<string, unknown> {
  return { ...spec, files: FILES.map((f) => f.name), page: PAGE, cluster: CLUSTER, corpusFingerprint: fingerprint }
}

function main(argv: string[]): number {
  const opt = new Map<string, string>()
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i]!.startsWith('--') || argv[i + 1] === undefined) {
      process.stderr.write(`usage: synth.js [--series small|default|tiny] [--seed N] [--ram-mib N] [--disk-mib N] [--count N]\n` + `                [--dirty-pages N] [--dirty-clusters N] [--corpus DIR] --out DIR\n`)
      return 2
    }
    opt.set(argv[i]!.slice(2), argv[i + 1]!)
  }
  const n = (k: string) => (opt.has(k) ? Number(opt.get(k)) : undefined)
  const out = opt.get('out')
  if (!out) return main(['--help'])
  const spec = specOf(opt.get('series') ?? 'small', {
    seed: n('seed'), ramMiB: n('ram-mib'), diskMiB: n('disk-mib'), count: n('count'), dirtyPages: n('dirty-pages'), dirtyClusters: n('dirty-clusters'), corpusRoot: opt.get('corpus'),
  })
  const s = new SyntheticSeries(spec)
  fs.mkdirSync(out, { recursive: true })
  const t0 = performance.now()
  for (let i = 0; i < spec.count; i++) {
    s.seek(i)
    s.write(path.join(out, SyntheticSeries.checkpointName(i)))
    if (i % 10 === 0 || i === spec.count - 1) process.stderr.write(`[synth] ${i + 1}/${spec.count} written, ${((performance.now() - t0) / 1000).toFixed(1)} s\n`)
  }
  s.close()
  fs.writeFileSync(path.join(out, 'manifest.json'), JSON.stringify({ ...manifestOf(spec, s.fingerprint), distinctWrites: s.distinctWrites }, null, 1) + '\n')
  process.stdout.write(out + '\n')
  return 0
}

if (process.argv[1] && fileURLToPath(import.meta.url) === fs.realpathSync(process.argv[1])) process.exitCode = main(process.argv.slice(2))
