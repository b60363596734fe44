/**
 * Workload S (issue 2 §9), generated in-process and deterministically from a seed: a RAM image and a
 * disk image that evolve step by step. Per step, `dirtyPages` 4 KiB RAM pages (80% of them in a hot 10%
 * of RAM) and `dirtyClusters` 64 KiB disk clusters get new contents: 40% zero, 30% bytes of real binaries
 * (files under /usr/lib), 20% text, 10% random. The initial images hold the same mix in every page and
 * cluster. The peers harness's series (bench/peers/synth.ts) follows the same recipe (not byte-identical: its own PRNG and corpus walk).
 */
import fs from 'node:fs'
import path from 'node:path'

export interface WorkloadOptions {
  ramBytes?: number
  diskBytes?: number
  dirtyPages?: number
  dirtyClusters?: number
  hotFraction?: number
  hotShare?: number
  seed?: number
}

/** xorshift128+-ish 32-bit generator: fast, seeded, good enough for picking pages. */
export class Rng {
  private a: number
  private b: number
  private c: number
  private d: number
  constructor(seed: number) {
    this.a = seed ^ 0x9e3779b9
    this.b = 0x243f6a88
    this.c = 0xb7e15162
    this.d = seed * 31 + 7
    for (let i = 0; i < 20; i++) this.u32()
  }
  u32(): number {
    let t = this.d
    const s = this.a
    this.d = this.c
    this.c = this.b
    this.b = s
    t ^= t << 11
    t ^= t >>> 8
    this.a = (t ^ s ^ (s >>> 19)) >>> 0
    return this.a
  }
  /** [0, n) */
  int(n: number): number {
    return Math.floor((this.u32() / 0x100000000) * n)
  }
  float(): number {
    return this.u32() / 0x100000000
  }
  fill(buf: Uint8Array): void {
    const n = buf.length >> 2
    const v = new Uint32Array(buf.buffer, buf.byteOffset, n)
    for (let i = 0; i < n; i++) v[i] = this.u32()
    for (let i = n * 4; i < buf.length; i++) buf[i] = this.u32() & 255
  }
}

function loadCorpus(limit: number): Buffer {
  const parts: Buffer[] = []
  let total = 0
  const walk = (dir: string) => {
    let entries: fs.Dirent[]
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true }).sort((x, y) => (x.name < y.name ? -1 : 1))
    } catch {
      return
    }
    for (const e of entries) {
      if (total >= limit) return
      const p = path.join(dir, e.name)
      if (e.isDirectory()) walk(p)
      else if (e.isFile()) {
        try {
          const st = fs.statSync(p)
          if (st.size < 65536 || st.size > 64 << 20) continue
          const b = fs.readFileSync(p)
          parts.push(b.subarray(0, Math.floor(b.length / 65536) * 65536))
          total += parts.at(-1)!.length
        } catch {}
      }
    }
  }
  walk('/usr/lib')
  if (total === 0) throw new Error('no corpus files under /usr/lib')
  return Buffer.concat(parts)
}

const WORDS = (() => {
  const r = new Rng(42)
  const letters = 'etaoinshrdlcumwfgypbvkjxqz'
  const out: string[] = []
  for (let i = 0; i < 4000; i++) {
    let w = ''
    const n = 2 + r.int(9)
    for (let k = 0; k < n; k++) w += letters[Math.min(25, Math.floor(26 * r.float() ** 1.6))]
    out.push(w)
  }
  out.push('\n', '\n', '.\n', ',', '0', '1', '42', '2024', 'error:', 'INFO', '=', '{', '}')
  return out
})()

export class Workload {
  readonly ram: Buffer
  readonly disk: Buffer
  readonly pageSize = 4096
  readonly clusterSize = 65536
  private readonly rng: Rng
  private readonly corpus: Buffer
  private readonly text: Buffer
  private readonly random: Buffer
  private readonly hot: Uint32Array
  readonly opts: Required<WorkloadOptions>
  step = 0
  /**
   * What each RAM page holds, as a content key: 0 zero, else kind << 25 | offset (1 corpus unit,
   * 2 text offset, 3 random offset). Equal keys are equal content; content(key) rebuilds the page.
   */
  readonly ramKeys: Int32Array

  constructor(o: WorkloadOptions = {}) {
    this.opts = {
      ramBytes: o.ramBytes ?? 256 << 20,
      diskBytes: o.diskBytes ?? 512 << 20,
      dirtyPages: o.dirtyPages ?? 1000,
      dirtyClusters: o.dirtyClusters ?? 20,
      hotFraction: o.hotFraction ?? 0.1,
      hotShare: o.hotShare ?? 0.8,
      seed: o.seed ?? 1,
    }
    this.rng = new Rng(this.opts.seed)
    this.corpus = loadCorpus(24 << 20)
    // pools that content is sliced from at random byte offsets: every slice is distinct content
    this.text = Buffer.alloc(8 << 20)
    let at = 0
    while (at < this.text.length) at += this.text.write(WORDS[this.rng.int(WORDS.length)]! + ' ', at, 'latin1')
    this.random = Buffer.alloc(16 << 20)
    this.rng.fill(this.random)
    this.ram = Buffer.alloc(this.opts.ramBytes)
    this.ramKeys = new Int32Array(this.opts.ramBytes / this.pageSize)
    this.disk = Buffer.alloc(this.opts.diskBytes)
    const pages = this.opts.ramBytes / this.pageSize
    const hot = new Set<number>()
    while (hot.size < Math.max(1, Math.floor(pages * this.opts.hotFraction))) hot.add(this.rng.int(pages))
    this.hot = Uint32Array.from(hot)
    for (let i = 0; i < pages; i++) this.put(this.ram, i, this.pageSize)
    for (let i = 0; i < this.opts.diskBytes / this.clusterSize; i++) this.put(this.disk, i, this.clusterSize)
  }

  /** New content for unit i of img: 40% zero, 30% binary, 20% text, 10% random. */
  private put(img: Buffer, i: number, unit: number): void {
    const u = this.rng.float()
    const at = i * unit
    let key = 0
    if (u < 0.4) img.fill(0, at, at + unit)
    else if (u < 0.7) {
      const units = Math.floor(this.corpus.length / unit)
      const n = this.rng.int(units)
      this.corpus.copy(img, at, n * unit, n * unit + unit)
      key = (1 << 25) | n
    } else if (u < 0.9) {
      const off = this.rng.int(this.text.length - unit)
      this.text.copy(img, at, off, off + unit)
      key = (2 << 25) | off
    } else {
      const off = this.rng.int(this.random.length - unit)
      this.random.copy(img, at, off, off + unit)
      key = (3 << 25) | off
    }
    if (img === this.ram) this.ramKeys[i] = key
  }

  /** The RAM page content a key of ramKeys stands for. */
  pageContent(key: number): Buffer {
    const kind = key >>> 25
    const off = key & ((1 << 25) - 1)
    const unit = this.pageSize
    if (kind === 0) return Buffer.alloc(unit)
    if (kind === 1) return this.corpus.subarray(off * unit, off * unit + unit)
    return (kind === 2 ? this.text : this.random).subarray(off, off + unit)
  }

  /** Advances one step; returns the dirty page and cluster indexes (sorted, unique). */
  next(): { pages: Uint32Array; clusters: Uint32Array } {
    this.step++
    const pages = new Set<number>()
    const n = this.opts.ramBytes / this.pageSize
    for (let k = 0; k < this.opts.dirtyPages; k++) {
      const p = this.rng.float() < this.opts.hotShare ? this.hot[this.rng.int(this.hot.length)]! : this.rng.int(n)
      this.put(this.ram, p, this.pageSize)
      pages.add(p)
    }
    const clusters = new Set<number>()
    const m = this.opts.diskBytes / this.clusterSize
    for (let k = 0; k < this.opts.dirtyClusters; k++) {
      const c = this.rng.int(m)
      this.put(this.disk, c, this.clusterSize)
      clusters.add(c)
    }
    return { pages: Uint32Array.from(pages).sort(), clusters: Uint32Array.from(clusters).sort() }
  }

  /** The timeline's regions for this workload (`fanout`: the trees' fan-out, else the library's default). */
  regions(fanout?: number): { ram: { size: number; chunkSize: number; fanout?: number }; disk: { size: number; chunkSize: number; fanout?: number } } {
    const f = fanout === undefined ? {} : { fanout }
    return { ram: { size: this.ram.length, chunkSize: this.pageSize, ...f }, disk: { size: this.disk.length, chunkSize: this.clusterSize, ...f } }
  }

  /** The first checkpoint's input: both images whole, awaited before they change (so `stable`, no copy). */
  first(vtime = 0n): { vtime: bigint; regions: { ram: { data: Buffer; stable: true }; disk: { data: Buffer; stable: true } }; blobs: { cpu: Buffer } } {
    return { vtime, regions: { ram: { data: this.ram, stable: true }, disk: { data: this.disk, stable: true } }, blobs: { cpu: Buffer.from(`cpu state ${this.step}`) } }
  }

  /**
   * Advances one step (next()) and returns the dirty-hint checkpoint input for it (vtime: 10 ms a
   * step), with the dirty indexes and the bytes they cover.
   */
  nextCheckpoint(): {
    input: { vtime: bigint; regions: { ram: { data: Buffer; dirty: Uint32Array }; disk: { data: Buffer; dirty: Uint32Array } }; blobs: { cpu: Buffer } }
    pages: Uint32Array
    clusters: Uint32Array
    dirtyBytes: number
  } {
    const d = this.next()
    return {
      input: {
        vtime: BigInt(this.step) * 10_000_000n,
        regions: { ram: { data: this.ram, dirty: d.pages }, disk: { data: this.disk, dirty: d.clusters } },
        blobs: { cpu: Buffer.from(`cpu state ${this.step}`) },
      },
      pages: d.pages,
      clusters: d.clusters,
      dirtyBytes: d.pages.length * this.pageSize + d.clusters.length * this.clusterSize,
    }
  }
}
