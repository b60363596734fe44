/**
 * The peer harness: one checkpoint series into ckpt and into the tools users would pick instead, one
 * fresh repository each, measured in one run on one machine.
 *
 * usage: node dist/bench/peers/run.js --series small|default|tiny|SERIES_DIR --out OUT.tsv [--tools "a b c"]
 *   A named series is synthetic (bench/peers/synth.ts), built lazily: each checkpoint is written in
 *   STAGE (tmpfs) just before it is ingested and deleted after (the middle and last ones are kept
 *   for the restore check). SERIES_DIR is a directory of checkpoint subdirectories (lexicographic
 *   order), each with the same files (written by synth.js, or your own).
 * Per tool (bench/peers/tools.ts): a fresh repository, init; each checkpoint ingested by one process timed from outside
 * (wall; CPU and max RSS from /usr/bin/time); repository bytes after each; a timed restore of the
 * last and the middle checkpoint, compared byte for byte with the source; a timed full verify.
 * By default the tools are interleaved: each checkpoint is built once and ingested by every tool in
 * turn (the order rotating), so that all see the same load of a shared machine (PEERS_INTERLEAVE=0:
 * one tool after the other, one repository at a time on disk).
 * A tool that is not installed is skipped with a line saying how to install it; a tool that fails
 * gets a row with a note. Exit 2 only for a usage error.
 * Output: OUT.tsv (one row per tool), OUT.ingest.tsv (one row per ingest), OUT.env (machine, tool
 * versions, series), logs under WORK/logs/<tool>.log.
 * Env: TOOLS (as --tools), WORK=/tmp/peers-work, STAGE=/dev/shm/peers-stage, KEEP_REPOS=1 keeps each
 *      repository, MIN_FREE_GB=4 stops a tool when the disk under WORK gets fuller, PEERS_CORPUS (the
 *      synthetic series' real-file directory, /usr/lib).
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { dirBytes, median, quantile } from '../stats.js'
import { IdealCounter, zstdLevel1 } from './ideal.js'
import { FILES, SERIES, SyntheticSeries, specOf, type SeriesSpec } from './synth.js'
import { DEFAULT_TOOLS, TOOLS, type Tool } from './tools.js'

export const COLUMNS = [
  'tool', 'checkpoints', 'total_ingest_s', 'median_ingest_ms', 'p90_ingest_ms', 'repo_bytes', 'bytes_per_checkpoint',
  'restore_last_s', 'restore_mid_s', 'verify_s', 'restore_ok', 'first_ingest_s', 'ingest_cpu_s', 'max_rss_mib', 'verify_ok', 'note',
] as const
export type Row = Record<(typeof COLUMNS)[number], string>
const INGEST_COLUMNS = ['tool', 'idx', 'checkpoint', 'wall_s', 'user_s', 'sys_s', 'max_rss_kb', 'repo_bytes_after']

export interface RunOptions {
  /** a synthetic series, or a directory of checkpoint directories */
  series: SeriesSpec | string
  tools: string[]
  out: string
  work?: string
  stage?: string
  keepRepos?: boolean
  minFreeGB?: number
  /** every checkpoint through every tool in turn (default, PEERS_INTERLEAVE=0 to turn off), or one tool after the other */
  interleave?: boolean
  log?: (line: string) => void
}

const here = path.dirname(fileURLToPath(import.meta.url))
/** dist/bench/peers when compiled; from the TypeScript sources (tests), the built copy of the checkout */
const peersBin = here.includes(`${path.sep}dist${path.sep}`) ? here : path.resolve(here, '../../dist/bench/peers')
const cliPath = path.resolve(peersBin, '../../cli/ckpt.js')
const HAVE_TIME = fs.existsSync('/usr/bin/time')

interface Phase {
  ok: boolean
  wall: number
  user: number
  sys: number
  rssKb: number
}

/** one phase: `bash -c BODY _ ARGS...` under /usr/bin/time, output appended to the tool's log */
function phase(body: string, args: string[], env: NodeJS.ProcessEnv, logFd: number): Phase {
  const tm = path.join(env.TOOLWORK!, '.time')
  const script = `set -eo pipefail\n${body}`
  const argv = ['bash', '-c', script, '_', ...args]
  const cmd = HAVE_TIME ? ['/usr/bin/time', '-f', '%U %S %M', '-o', tm, ...argv] : argv
  const t0 = process.hrtime.bigint()
  const r = spawnSync(cmd[0]!, cmd.slice(1), { env, stdio: ['ignore', logFd, logFd] })
  const wall = Number(process.hrtime.bigint() - t0) / 1e9
  let user = NaN
  let sys = NaN
  let rssKb = NaN
  if (HAVE_TIME && fs.existsSync(tm)) {
    const last = fs.readFileSync(tm, 'utf8').trim().split('\n').pop() ?? ''
    const m = /^([\d.]+) ([\d.]+) (\d+)$/.exec(last)
    if (m) [user, sys, rssKb] = [Number(m[1]), Number(m[2]), Number(m[3])]
    fs.rmSync(tm, { force: true })
  }
  if (r.status !== 0) fs.writeSync(logFd, `!! exited ${r.status ?? r.signal}: ${args.join(' ')}\n`)
  return { ok: r.status === 0, wall, user, sys, rssKb }
}

function installed(cmd: string): boolean {
  return spawnSync('bash', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

/** byte-for-byte comparison of two files */
export function sameFile(a: string, b: string): boolean {
  let fa: number | undefined
  let fb: number | undefined
  try {
    if (fs.statSync(a).size !== fs.statSync(b).size) return false
    fa = fs.openSync(a, 'r')
    fb = fs.openSync(b, 'r')
    const ba = Buffer.allocUnsafe(4 << 20)
    const bb = Buffer.allocUnsafe(4 << 20)
    for (;;) {
      const n = fs.readSync(fa, ba, 0, ba.length, null)
      const m = fs.readSync(fb, bb, 0, bb.length, null)
      if (n !== m) return false
      if (n === 0) return true
      if (ba.compare(bb, 0, m, 0, n) !== 0) return false
    }
  } catch {
    return false
  } finally {
    if (fa !== undefined) fs.closeSync(fa)
    if (fb !== undefined) fs.closeSync(fb)
  }
}

/** where checkpoint i comes from: a directory of the series, or the lazy generator writing into the stage */
interface Source {
  count: number
  files: string[]
  names: string[]
  /** the directory holding checkpoint i (built now, for a lazy series) */
  get(i: number): string
  /** done with checkpoint i (a lazy series deletes it unless it is kept for the restore check) */
  drop(i: number, keep: boolean): void
  close(): void
}

function openSource(series: SeriesSpec | string, stage: string): Source {
  if (typeof series === 'string') {
    const names = fs.readdirSync(series, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    const files = names.length ? fs.readdirSync(path.join(series, names[0]!)).sort() : []
    return { count: names.length, files, names, get: (i) => path.join(series, names[i]!), drop() {}, close() {} }
  }
  const gen = new SyntheticSeries(series)
  fs.rmSync(stage, { recursive: true, force: true })
  fs.mkdirSync(stage, { recursive: true })
  const names = Array.from({ length: series.count }, (_, i) => SyntheticSeries.checkpointName(i))
  return {
    count: series.count,
    files: FILES.map((f) => f.name),
    names,
    get(i) {
      const d = path.join(stage, names[i]!)
      if (fs.existsSync(d)) return d
      gen.seek(i)
      gen.write(d)
      return d
    },
    drop(i, keep) {
      if (!keep) fs.rmSync(path.join(stage, names[i]!), { recursive: true, force: true })
    },
    close() {
      gen.close()
      fs.rmSync(stage, { recursive: true, force: true })
    },
  }
}

const fmt = (n: number, d: number) => (Number.isFinite(n) ? n.toFixed(d) : 'NA')

function emptyRow(tool: string, count: number, note: string): Row {
  const r = Object.fromEntries(COLUMNS.map((c) => [c, 'NA'])) as Row
  return { ...r, tool, checkpoints: String(count), note }
}

/** one tool's pass over the series: a plug-in run as processes, or the in-process `ideal` */
interface Lane {
  name: string
  tool?: Tool
  ideal?: IdealCounter
  /** the row of a tool that could not run */
  skipped?: Row
  env: NodeJS.ProcessEnv
  logFd: number
  base: string
  walls: number[]
  cpu: number
  rssKb: number
  note: string
  ingestRows: string[]
}

type Opts = Required<RunOptions>

/** a fresh repository and its init; or the row saying why the tool is skipped */
function openLane(name: string, src: Source, o: Opts): Lane {
  const base = path.join(o.work, name)
  const lane: Lane = { name, env: {}, logFd: -1, base, walls: [], cpu: 0, rssKb: 0, note: '', ingestRows: [] }
  const skip = (what: string, install: string) => {
    o.log(`${name}: skipped, ${what} not found; install with: ${install}`)
    lane.skipped = emptyRow(name, src.count, `skipped: not installed (${install})`)
    return lane
  }
  if (name === 'ideal') {
    const zstd = zstdLevel1()
    if (!zstd) return skip('the optional package zstd-napi', 'npm install zstd-napi')
    lane.ideal = new IdealCounter(zstd)
    return lane
  }
  const tool = TOOLS.find((t) => t.name === name)!
  lane.tool = tool
  const missing = tool.needs.filter((c) => !installed(c))
  if (tool.name === 'ckpt' && !fs.existsSync(cliPath)) missing.push(cliPath)
  if (tool.name === 'casync' && !zstdLevel1()) missing.push('zstd-napi (npm install zstd-napi)')
  if (missing.length) return skip(missing.join(', '), tool.install)
  fs.rmSync(base, { recursive: true, force: true })
  const last = src.count - 1
  lane.env = {
    ...process.env, REPO: path.join(base, 'repo'), TOOLWORK: path.join(base, 'aux'), NODE: process.execPath, CKPT_CLI: cliPath, PEERS_BIN: peersBin,
    FILES: src.files.join(' '), RESTORE_IDX: `${Math.floor(last / 2)} ${last}`,
  }
  fs.mkdirSync(lane.env.REPO!, { recursive: true })
  fs.mkdirSync(lane.env.TOOLWORK!, { recursive: true })
  fs.mkdirSync(path.join(o.work, 'logs'), { recursive: true })
  lane.logFd = fs.openSync(path.join(o.work, 'logs', `${name}.log`), 'w')
  o.log(`${name}: start`)
  if (tool.init && !phase(tool.init, [], lane.env, lane.logFd).ok) lane.note = 'init failed'
  return lane
}

/** checkpoint i (in dir) into one lane, timed */
function ingestLane(l: Lane, src: Source, i: number, dir: string, o: Opts): void {
  if (l.skipped || l.note) return
  let p: Phase
  let size: number
  if (l.ideal) {
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    l.ideal.add(dir, src.files)
    const cpu = process.cpuUsage(cpu0)
    p = { ok: true, wall: (performance.now() - t0) / 1000, user: cpu.user / 1e6, sys: cpu.system / 1e6, rssKb: NaN }
    size = l.ideal.total
  } else {
    const free = fs.statfsSync(l.env.REPO!)
    if ((free.bavail * free.bsize) / 2 ** 30 < o.minFreeGB) {
      l.note = `stopped at ${src.names[i]}: less than ${o.minFreeGB} GiB free`
      return
    }
    p = phase(l.tool!.ingest, [dir, src.names[i]!, String(i)], l.env, l.logFd)
    if (!p.ok) {
      l.note = `ingest failed at ${src.names[i]}`
      return
    }
    size = repoBytes(l.tool!, l.env)
  }
  l.walls.push(p.wall)
  l.cpu += p.user + p.sys
  l.rssKb = Math.max(l.rssKb, p.rssKb || 0)
  l.ingestRows.push([l.name, i, src.names[i], fmt(p.wall, 3), fmt(p.user, 2), fmt(p.sys, 2), fmt(p.rssKb, 0), size].join('\t'))
  if (i % 10 === 0 || i === src.count - 1) o.log(`${l.name}: ingested ${src.names[i]} in ${p.wall.toFixed(3)} s, ${l.ideal ? 'ideal' : 'repo'} ${size} B`)
}

function repoBytes(tool: Tool, env: NodeJS.ProcessEnv): number {
  if (!tool.size) return dirBytes(env.REPO!)
  const r = spawnSync('bash', ['-c', tool.size], { env, encoding: 'utf8' })
  return Number(r.stdout.trim().split('\n').pop())
}

function restoreCheck(tool: Tool, src: Source, i: number, env: NodeJS.ProcessEnv, logFd: number): { s: number; ok: boolean } {
  const dest = path.join(env.TOOLWORK!, `restore-${src.names[i]}`)
  fs.rmSync(dest, { recursive: true, force: true })
  fs.mkdirSync(dest, { recursive: true })
  const p = phase(tool.restore!, [src.names[i]!, String(i), dest], env, logFd)
  let ok = p.ok
  for (const f of src.files) {
    if (!sameFile(path.join(src.get(i), f), path.join(dest, f))) {
      ok = false
      fs.writeSync(logFd, `!! restore mismatch: ${src.names[i]}/${f}\n`)
    }
  }
  fs.rmSync(dest, { recursive: true, force: true })
  return { s: p.wall, ok }
}

/** the lane's row: its ingests summed up, a timed restore of the last and middle checkpoints, a timed verify */
function closeLane(l: Lane, src: Source, o: Opts): Row {
  if (l.skipped) return l.skipped
  const tool = l.tool
  const last = src.count - 1
  const mid = Math.floor(last / 2)
  try {
    const row = emptyRow(l.name, src.count, l.note || '-')
    summarize(row, l, l.ideal ? l.ideal.total : repoBytes(tool!, l.env))
    if (!tool) return row
    if (!l.note && tool.restore) {
      const rl = restoreCheck(tool, src, last, l.env, l.logFd)
      const rm = restoreCheck(tool, src, mid, l.env, l.logFd)
      Object.assign(row, { restore_last_s: fmt(rl.s, 3), restore_mid_s: fmt(rm.s, 3), restore_ok: rl.ok && rm.ok ? 'yes' : 'no' })
      o.log(`${l.name}: restore last ${rl.s.toFixed(2)} s, middle ${rm.s.toFixed(2)} s, identical: ${row.restore_ok}`)
    }
    if (!l.note && tool.verify) {
      const v = phase(tool.verify, [], l.env, l.logFd)
      Object.assign(row, { verify_s: fmt(v.wall, 3), verify_ok: v.ok ? 'yes' : 'no' })
      o.log(`${l.name}: verify ${v.wall.toFixed(2)} s, ok: ${row.verify_ok}`)
    }
    if (l.note) o.log(`${l.name}: ${l.note} (see ${path.join(o.work, 'logs', `${l.name}.log`)})`)
    return row
  } finally {
    if (tool?.done) phase(tool.done, [], l.env, l.logFd)
    if (l.logFd >= 0) fs.closeSync(l.logFd)
    if (!o.keepRepos && tool) fs.rmSync(l.base, { recursive: true, force: true })
  }
}

function summarize(row: Row, run: Lane, bytes: number): void {
  const n = run.walls.length
  if (!n) return
  Object.assign(row, {
    checkpoints: String(n),
    total_ingest_s: fmt(run.walls.reduce((a, b) => a + b, 0), 3),
    median_ingest_ms: fmt(median(run.walls) * 1000, 1),
    p90_ingest_ms: fmt(quantile(run.walls, 0.9) * 1000, 1),
    repo_bytes: String(bytes),
    bytes_per_checkpoint: String(Math.floor(bytes / n)),
    first_ingest_s: fmt(run.walls[0]!, 3),
    ingest_cpu_s: fmt(run.cpu, 2),
    max_rss_mib: run.rssKb ? String(Math.round(run.rssKb / 1024)) : 'NA',
  })
}

/**
 * Every lane over the series. Interleaved (the default): each checkpoint is built once and ingested
 * by every tool in turn, the order rotating by one each checkpoint, so that every tool sees the
 * same load of a shared machine; all repositories exist at once. Sequential: one tool after the other.
 */
function runLanes(series: SeriesSpec | string, o: Opts, interleave: boolean, emit: (row: Row, lane: Lane) => void): void {
  const groups = interleave ? [o.tools] : o.tools.map((t) => [t])
  for (const names of groups) {
    const src = openSource(series, o.stage)
    try {
      const lanes = names.map((n) => openLane(n, src, o))
      const last = src.count - 1
      for (let i = 0; i < src.count; i++) {
        const dir = src.get(i)
        for (let k = 0; k < lanes.length; k++) ingestLane(lanes[(i + k) % lanes.length]!, src, i, dir, o)
        src.drop(i, i === last || i === Math.floor(last / 2))
      }
      for (const l of lanes) emit(closeLane(l, src, o), l)
    } finally {
      src.close()
    }
  }
}

function versions(): string[] {
  const v = (cmd: string) => (installed(cmd.split(' ')[0]!) ? (spawnSync('bash', ['-c', `${cmd} 2>&1 | head -n 1`], { encoding: 'utf8' }).stdout.trim() || '?') : 'not installed')
  const mem = Math.round(os.totalmem() / 2 ** 30)
  let distro = os.type()
  try {
    distro = /PRETTY_NAME="?([^"\n]*)/.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] ?? distro
  } catch {}
  return [
    `machine: ${os.cpus().length} cores, ${mem} GiB, ${distro}, node ${process.version}, ${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    `restic: ${v('restic version')}`,
    `borg: ${v('borg --version')}`,
    `casync: ${v('casync --version')}`,
    `qemu-img: ${v('qemu-img --version')}`,
    `zstd: ${v('zstd --version')}`,
  ]
}

/** runs every tool over the series; writes OUT.tsv, OUT.ingest.tsv, OUT.env; returns the rows */
export function runSeries(opts: RunOptions): Row[] {
  const o: Required<RunOptions> = {
    work: process.env.WORK ?? '/tmp/peers-work',
    stage: process.env.STAGE ?? '/dev/shm/peers-stage',
    keepRepos: process.env.KEEP_REPOS === '1',
    minFreeGB: Number(process.env.MIN_FREE_GB ?? 4),
    interleave: process.env.PEERS_INTERLEAVE !== '0',
    log: (l: string) => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${l}\n`),
    ...(Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as unknown as RunOptions),
  }
  const base = o.out.replace(/\.tsv$/, '')
  fs.mkdirSync(path.dirname(o.out), { recursive: true })
  const describe = typeof o.series === 'string' ? `directory ${o.series}` : openSourceDescription(o.series)
  const interleave = o.interleave
  const mode = interleave ? 'interleaved: each checkpoint ingested by every tool in turn, the order rotating' : 'sequential: one tool after the other'
  fs.writeFileSync(`${base}.env`, [...versions(), `series: ${describe}`, `mode: ${mode}`].map((l) => `# ${l}\n`).join(''))
  fs.writeFileSync(o.out, COLUMNS.join('\t') + '\n')
  fs.writeFileSync(`${base}.ingest.tsv`, INGEST_COLUMNS.join('\t') + '\n')
  const rows: Row[] = []
  o.log(`series: ${describe}; tools: ${o.tools.join(' ')}${interleave ? ' (interleaved)' : ''}`)
  runLanes(o.series, o, interleave, (row, lane) => {
    rows.push(row)
    fs.appendFileSync(o.out, COLUMNS.map((c) => row[c]).join('\t') + '\n')
    if (lane.ingestRows.length) fs.appendFileSync(`${base}.ingest.tsv`, lane.ingestRows.join('\n') + '\n')
  })
  return rows
}

function openSourceDescription(s: SeriesSpec): string {
  return `synthetic "${s.name}": ${s.count} checkpoints of ${s.ramMiB} MiB RAM + ${s.diskMiB} MiB disk, ${s.dirtyPages} dirty 4 KiB pages + ${s.dirtyClusters} dirty 64 KiB clusters per step (80% in a hot 10%), seed ${s.seed}, real-file content from ${s.corpusRoot}`
}

const USAGE = `usage: node dist/bench/peers/run.js --series ${Object.keys(SERIES).join('|')}|SERIES_DIR --out OUT.tsv [--tools "${DEFAULT_TOOLS.join(' ')}"]
  tools known: ideal ${TOOLS.map((t) => t.name).join(' ')}
`

/** parses the command line; undefined for a usage error */
export function parseArgs(argv: string[]): RunOptions | undefined {
  const opt = new Map<string, string>()
  for (let i = 0; i < argv.length; i += 2) {
    if (!['--series', '--out', '--tools'].includes(argv[i]!) || argv[i + 1] === undefined) return undefined
    opt.set(argv[i]!.slice(2), argv[i + 1]!)
  }
  const s = opt.get('series')
  const out = opt.get('out')
  if (!s || !out) return undefined
  let series: SeriesSpec | string
  if (SERIES[s]) series = specOf(s)
  else if (fs.existsSync(s) && fs.statSync(s).isDirectory()) series = path.resolve(s)
  else return undefined
  let tools = (opt.get('tools') ?? process.env.TOOLS ?? '').split(/[\s,]+/).filter(Boolean)
  if (!tools.length) {
    // zstd of every file of a big series would fill the disk: count its bytes instead
    const big = typeof series !== 'string' && series.count * (series.ramMiB + series.diskMiB) > 16 * 1024
    tools = DEFAULT_TOOLS.map((t) => (big && t === 'zstd' ? 'zstd-countonly' : t))
  }
  const known = new Set(['ideal', ...TOOLS.map((t) => t.name)])
  if (tools.some((t) => !known.has(t))) return undefined
  return { series, out: path.resolve(out), tools }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === fs.realpathSync(process.argv[1])) {
  const opts = parseArgs(process.argv.slice(2))
  if (!opts) {
    process.stderr.write(USAGE)
    process.exitCode = 2
  } else {
    const rows = runSeries(opts)
    process.stderr.write(rows.map((r) => `${r.tool}\tmedian ${r.median_ingest_ms} ms\t${r.repo_bytes} B\trestore ${r.restore_last_s} s ${r.restore_ok}\tverify ${r.verify_s} s ${r.verify_ok}\t${r.note}`).join('\n') + '\n')
  }
}
