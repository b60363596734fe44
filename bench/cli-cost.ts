/**
 * `npm run bench:cli`: what one `ckpt` process costs, beside `qemu-img` on the same images in the same
 * run (issue 14, item 1). Rows: `ckpt --help`; `ckpt add` of 1, 64, 192 (64 MiB RAM + 128 MiB disk:
 * the harness's small series) and 768 MiB (256 + 512: the default series), into a fresh store and
 * into one with 30 checkpoints of the series already; `ckpt restore --all` of the last of them; then the
 * same add and restore rows again with `ckpt serve` holding that store (the server's CPU during each
 * command from /proc is added to the client's, its peak RSS counted when higher). Each
 * ckpt row has its qemu-img row: the first checkpoint is `qemu-img convert -O qcow2`, a later one an
 * empty overlay over the raw file `qemu-img rebase`d onto the previous qcow2 (64 KiB clusters, exactly
 * as bench/peers' qemu-chain plug-in), a restore `qemu-img convert -O raw` of the chain's top.
 * Each figure is the median of --runs (default 5) runs, ckpt and qemu-img alternating; wall time, CPU
 * (user+sys, /usr/bin/time) and peak RSS of the process. Results: bench/results/cli-cost.md.
 * Options: --runs N, --sizes 1,64,192,768, --series N (checkpoints before the timed ones, default 30),
 * --work DIR (default /tmp/ckpt-cli-cost, deleted at the end), --out FILE, --cli FILE (another build of
 * the CLI, e.g. a bundle).
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { median } from './stats.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
let CLI = path.join(ROOT, 'dist/cli/ckpt.js')
const MiB = 1 << 20

interface Args {
  runs: number
  sizes: number[]
  series: number
  work: string
  out: string
}

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 5, sizes: [1, 64, 192, 768], series: 30, work: '/tmp/ckpt-cli-cost', out: path.join(ROOT, 'bench/results/cli-cost.md') }
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1]
    if (argv[i] === '--runs') a.runs = Number(v)
    else if (argv[i] === '--sizes') a.sizes = v!.split(',').map(Number)
    else if (argv[i] === '--series') a.series = Number(v)
    else if (argv[i] === '--work') a.work = v!
    else if (argv[i] === '--out') a.out = v!
    else if (argv[i] === '--cli') CLI = path.resolve(v!)
    else continue
    i++
  }
  return a
}

// ---------------------------------------------------------------- images

/** The files of a checkpoint of `size` MiB: one RAM file up to 64 MiB, else 1/3 RAM (4 KiB pages) and 2/3 disk (64 KiB clusters). */
function layout(size: number): { name: string; bytes: number }[] {
  if (size <= 64) return [{ name: 'ram', bytes: size * MiB }]
  return [
    { name: 'ram', bytes: (size / 3) * MiB },
    { name: 'disk', bytes: ((2 * size) / 3) * MiB },
  ]
}

let seed = 0x9e3779b9
function rand(): number {
  seed ^= seed << 13
  seed >>>= 0
  seed ^= seed >>> 17
  seed ^= seed << 5
  seed >>>= 0
  return seed
}

/** A page of content: zero (1/3), text-like compressible (1/3) or random (1/3). */
function fillPage(b: Buffer, at: number, len: number): void {
  const kind = rand() % 3
  if (kind === 0) b.fill(0, at, at + len)
  else if (kind === 1) {
    const word = `ckpt-${rand() % 997} page ${at} `
    for (let o = at; o < at + len; o += word.length) b.write(word, o, Math.min(word.length, at + len - o), 'latin1')
  } else for (let o = at; o < at + len; o += 4) b.writeUInt32LE(rand(), o)
}

function makeImage(file: string, bytes: number): void {
  const fd = fs.openSync(file, 'w')
  const buf = Buffer.alloc(4 * MiB)
  for (let off = 0; off < bytes; off += buf.length) {
    const n = Math.min(buf.length, bytes - off)
    for (let p = 0; p < n; p += 4096) fillPage(buf, p, 4096)
    fs.writeSync(fd, buf, 0, n, off)
  }
  fs.closeSync(fd)
}

/**
 * The next checkpoint's content, in place, at the harness's rate (bench/peers' default series: 1,000 of
 * a 256 MiB RAM image's 4 KiB pages and 20 of a 512 MiB disk's 64 KiB clusters per step), scaled to
 * the file's size: RAM files get pages rewritten, disk files clusters.
 */
function mutate(file: string, name: string, bytes: number): void {
  const unit = name === 'ram' ? 4096 : 65536
  const count = Math.max(name === 'ram' ? 4 : 1, Math.round(name === 'ram' ? (1000 * bytes) / (256 * MiB) : (20 * bytes) / (512 * MiB)))
  const fd = fs.openSync(file, 'r+')
  const piece = Buffer.alloc(unit)
  const units = bytes / unit
  for (let k = 0; k < count; k++) {
    for (let p = 0; p < unit; p += 4096) fillPage(piece, p, 4096)
    fs.writeSync(fd, piece, 0, unit, (rand() % units) * unit)
  }
  fs.closeSync(fd)
}

// ---------------------------------------------------------------- timing

interface Sample {
  wall: number
  cpu: number
  rss: number
}

/** Runs a command; wall ms, CPU ms (user+sys) and peak RSS (MiB) by /usr/bin/time. */
function timed(cmd: string, args: string[], tag: string): Sample {
  const tf = path.join(os.tmpdir(), `ckpt-cli-cost-time-${process.pid}`)
  const t = process.hrtime.bigint()
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S %M', '-o', tf, cmd, ...args], { encoding: 'utf8', maxBuffer: 64 * MiB })
  const wall = Number(process.hrtime.bigint() - t) / 1e6
  if (r.status !== 0) throw new Error(`${tag}: ${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`)
  const [u, s, m] = fs.readFileSync(tf, 'utf8').trim().split('\n').pop()!.split(/\s+/).map(Number)
  fs.rmSync(tf, { force: true })
  return { wall, cpu: (u! + s!) * 1000, rss: m! / 1024 }
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB })
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`)
}

// ---------------------------------------------------------------- the two tools

/** A process's CPU so far (user+sys, ms) and peak RSS (MiB), from /proc. */
function procUsage(pid: number): { cpu: number; rss: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // fields 14 and 15 (utime, stime) in clock ticks of 1/100 s (sysconf(_SC_CLK_TCK) on Linux)
  const cpu = ((Number(f[11]) + Number(f[12])) * 1000) / 100
  const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return { cpu, rss: Number(hwm?.[1] ?? 0) / 1024 }
}

class Ckpt {
  private vtime = 0
  /** the `ckpt serve` process holding the store, when one runs */
  private server: number | undefined
  constructor(readonly store: string) {
    fs.rmSync(store, { recursive: true, force: true })
    run(process.execPath, [CLI, 'init', '--store', store])
  }

  /** Starts `ckpt serve --detach` on the store: later commands run there. */
  serve(): void {
    const r = spawnSync(process.execPath, [CLI, 'serve', '--store', this.store, '--detach', '--idle', '0', '--json'], { encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`ckpt serve exited ${r.status}: ${r.stderr}`)
    this.server = (JSON.parse(r.stdout) as { pid: number }).pid
  }

  stopServe(): void {
    run(process.execPath, [CLI, 'serve', '--store', this.store, '--stop'])
    this.server = undefined
  }

  /** A command timed; with a server, its CPU during the command added, and its peak RSS if higher. */
  private timedCkpt(args: string[], tag: string): Sample {
    const before = this.server === undefined ? undefined : procUsage(this.server)
    const s = timed(process.execPath, args, tag)
    if (before === undefined) return s
    const after = procUsage(this.server!)
    return { wall: s.wall, cpu: s.cpu + after.cpu - before.cpu, rss: Math.max(s.rss, after.rss) }
  }

  addArgs(files: { name: string; file: string }[]): string[] {
    const regions = files.map((f) => `${f.name}=${f.file}:${f.name === 'ram' ? 4096 : 65536}`)
    return [CLI, 'add', '--store', this.store, '--timeline', 'series', '--vtime', String(this.vtime++), ...regions]
  }

  add(files: { name: string; file: string }[], tag: string): Sample {
    return this.timedCkpt(this.addArgs(files), tag)
  }

  restore(out: string, tag: string): Sample {
    fs.rmSync(out, { recursive: true, force: true })
    return this.timedCkpt([CLI, 'restore', '--store', this.store, 'series', '--all', '--out', out], tag)
  }
}

class QemuChain {
  private n = 0
  constructor(readonly dir: string) {
    fs.rmSync(dir, { recursive: true, force: true })
    fs.mkdirSync(dir, { recursive: true })
  }

  private top(name: string, n: number): string {
    return path.join(this.dir, name, `${String(n).padStart(4, '0')}.qcow2`)
  }

  /** one checkpoint of every file, as one process per step like the harness (the wall and CPU of the steps add up) */
  add(files: { name: string; file: string }[], tag: string): Sample {
    const total: Sample = { wall: 0, cpu: 0, rss: 0 }
    const acc = (s: Sample) => {
      total.wall += s.wall
      total.cpu += s.cpu
      total.rss = Math.max(total.rss, s.rss)
    }
    for (const f of files) {
      fs.mkdirSync(path.join(this.dir, f.name), { recursive: true })
      const q = this.top(f.name, this.n)
      if (this.n === 0) acc(timed('qemu-img', ['convert', '-O', 'qcow2', f.file, q], tag))
      else {
        acc(timed('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', f.file, '-F', 'raw', q], tag))
        acc(timed('qemu-img', ['rebase', '-f', 'qcow2', '-b', this.top(f.name, this.n - 1), '-F', 'qcow2', q], tag))
      }
    }
    this.n++
    return total
  }

  restore(files: { name: string }[], out: string, tag: string): Sample {
    fs.rmSync(out, { recursive: true, force: true })
    fs.mkdirSync(out, { recursive: true })
    const total: Sample = { wall: 0, cpu: 0, rss: 0 }
    for (const f of files) {
      const s = timed('qemu-img', ['convert', '-O', 'raw', this.top(f.name, this.n - 1), path.join(out, f.name)], tag)
      total.wall += s.wall
      total.cpu += s.cpu
      total.rss = Math.max(total.rss, s.rss)
    }
    return total
  }
}

// ---------------------------------------------------------------- rows

interface Row {
  what: string
  ckpt: Sample[]
  qemu: Sample[]
}

function med(xs: Sample[], k: keyof Sample): number {
  return median(xs.map((x) => x[k]))
}

function helpRow(runs: number): Row {
  const ckpt: Sample[] = []
  for (let i = 0; i < runs + 1; i++) ckpt.push(timed(process.execPath, [CLI, '--help'], 'help'))
  const qemu: Sample[] = []
  for (let i = 0; i < runs + 1; i++) qemu.push(timed('qemu-img', ['--help'], 'qemu help'))
  // the first run of each warms the page cache
  return { what: '`--help`', ckpt: ckpt.slice(1), qemu: qemu.slice(1) }
}

/** `add` into a fresh store vs `qemu-img convert -O qcow2`: runs pairs, each on new, empty repositories. */
function freshRow(size: number, files: { name: string; file: string }[], a: Args): Row {
  const row: Row = { what: `add ${size} MiB, fresh store`, ckpt: [], qemu: [] }
  for (let i = 0; i < a.runs; i++) {
    const c = new Ckpt(path.join(a.work, 'fresh-ckpt'))
    row.ckpt.push(c.add(files, row.what))
    const q = new QemuChain(path.join(a.work, 'fresh-qemu'))
    row.qemu.push(q.add(files, row.what))
  }
  fs.rmSync(path.join(a.work, 'fresh-ckpt'), { recursive: true, force: true })
  fs.rmSync(path.join(a.work, 'fresh-qemu'), { recursive: true, force: true })
  return row
}

/** `add` into a store of a.series checkpoints of the series, then restores of the last checkpoint. */
function seriesRows(size: number, files: { name: string; file: string; bytes: number }[], a: Args): Row[] {
  const c = new Ckpt(path.join(a.work, 'series-ckpt'))
  const q = new QemuChain(path.join(a.work, 'series-qemu'))
  for (let i = 0; i < a.series; i++) {
    if (i > 0) for (const f of files) mutate(f.file, f.name, f.bytes)
    c.add(files, 'series')
    q.add(files, 'series')
  }
  const add: Row = { what: `add ${size} MiB, store of ${a.series}`, ckpt: [], qemu: [] }
  for (let i = 0; i < a.runs; i++) {
    for (const f of files) mutate(f.file, f.name, f.bytes)
    add.ckpt.push(c.add(files, add.what))
    add.qemu.push(q.add(files, add.what))
  }
  const restore: Row = { what: `restore ${size} MiB (--all, the last)`, ckpt: [], qemu: [] }
  const out = path.join(a.work, 'out')
  for (let i = 0; i < a.runs; i++) {
    restore.ckpt.push(c.restore(out, restore.what))
    restore.qemu.push(q.restore(files, out, restore.what))
  }
  // the restored bytes are the last checkpoint's
  const check = () => {
    for (const f of files) if (!fs.readFileSync(path.join(out, f.name)).equals(fs.readFileSync(f.file))) throw new Error(`restore of ${f.name} differs`)
  }
  check()
  // the same with `ckpt serve` holding the store (its CPU during each command counted in ckpt's)
  c.serve()
  const sAdd: Row = { what: `add ${size} MiB, store of ${a.series}, \`ckpt serve\``, ckpt: [], qemu: [] }
  const sRestore: Row = { what: `restore ${size} MiB (--all, the last), \`ckpt serve\``, ckpt: [], qemu: [] }
  try {
    for (let i = 0; i < a.runs; i++) {
      for (const f of files) mutate(f.file, f.name, f.bytes)
      sAdd.ckpt.push(c.add(files, sAdd.what))
      sAdd.qemu.push(q.add(files, sAdd.what))
    }
    for (let i = 0; i < a.runs; i++) {
      sRestore.ckpt.push(c.restore(out, sRestore.what))
      sRestore.qemu.push(q.restore(files, out, sRestore.what))
    }
    check()
  } finally {
    c.stopServe()
  }
  fs.rmSync(out, { recursive: true, force: true })
  fs.rmSync(c.store, { recursive: true, force: true })
  fs.rmSync(q.dir, { recursive: true, force: true })
  return [add, restore, sAdd, sRestore]
}

// ---------------------------------------------------------------- report

function fmt(ms: number): string {
  return ms >= 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms).toLocaleString('en-US')} ms`
}

function report(rows: Row[], a: Args, load: [string, string], started: Date): string {
  const lines = [
    '# `ckpt` process cost beside `qemu-img` (bench/cli-cost.ts, `npm run bench:cli`)',
    '',
    `${started.toISOString()}; CLI ${path.relative(ROOT, CLI)}; ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, ` +
      `${spawnSync('qemu-img', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0]}. Median of ${a.runs} runs each, ckpt and qemu-img alternating; ` +
      `load average at start ${load[0]}, at end ${load[1]} (the machine is shared: wall times are noisy, CPU times less so).`,
    '',
    'Images: pages 1/3 zero, 1/3 text, 1/3 random; each later checkpoint rewrites 1,000 pages per 256 MiB of RAM and 20 clusters per 512 MiB of disk (the peers series\' rate). Up to 64 MiB one RAM file',
    '(4 KiB chunks); 192 and 768 MiB are 1/3 RAM + 2/3 disk (64 KiB clusters), the small and default series of bench/peers.',
    `qemu-img: first checkpoint \`convert -O qcow2\`, later ones \`create -b RAW\` + \`rebase -b PREVIOUS\` (64 KiB clusters), restore \`convert -O raw\` of the top;`,
    'one process per step and file, summed (as the harness times it). ckpt: one `ckpt add` (all files), one `ckpt restore --all`.',
    '',
    '| what | ckpt wall | qemu-img wall | ratio | ckpt CPU | qemu-img CPU | ckpt peak RSS |',
    '|---|---:|---:|---:|---:|---:|---:|',
  ]
  for (const r of rows) {
    const cw = med(r.ckpt, 'wall')
    const qw = med(r.qemu, 'wall')
    lines.push(`| ${r.what} | ${fmt(cw)} | ${fmt(qw)} | ${(cw / qw).toFixed(2)} | ${fmt(med(r.ckpt, 'cpu'))} | ${fmt(med(r.qemu, 'cpu'))} | ${Math.round(med(r.ckpt, 'rss'))} MiB |`)
  }
  lines.push('', 'Raw samples (wall ms, ckpt / qemu-img):', '')
  for (const r of rows) lines.push(`- ${r.what}: ${r.ckpt.map((s) => Math.round(s.wall)).join(' ')} / ${r.qemu.map((s) => Math.round(s.wall)).join(' ')}`)
  return lines.join('\n') + '\n'
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2))
  if (spawnSync('qemu-img', ['--version']).status !== 0) {
    console.error('bench:cli: qemu-img is missing (apt-get install -y qemu-utils)')
    process.exit(2)
  }
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: npm run build`)
  const started = new Date()
  const load0 = os.loadavg().map((x) => x.toFixed(1)).join(' ')
  fs.rmSync(a.work, { recursive: true, force: true })
  fs.mkdirSync(a.work, { recursive: true })
  const rows: Row[] = [helpRow(a.runs)]
  console.error(`bench:cli: help done`)
  try {
    for (const size of a.sizes) {
      const files = layout(size).map((l) => ({ ...l, file: path.join(a.work, `${l.name}-${size}.img`) }))
      for (const f of files) makeImage(f.file, f.bytes)
      rows.push(freshRow(size, files, a))
      rows.push(...seriesRows(size, files, a))
      for (const f of files) fs.rmSync(f.file, { force: true })
      console.error(`bench:cli: ${size} MiB done`)
      console.error(report(rows, a, [load0, '…'], started))
    }
  } finally {
    fs.rmSync(a.work, { recursive: true, force: true })
  }
  const text = report(rows, a, [load0, os.loadavg().map((x) => x.toFixed(1)).join(' ')], started)
  fs.mkdirSync(path.dirname(a.out), { recursive: true })
  fs.writeFileSync(a.out, text)
  console.log(text)
}

await main()
