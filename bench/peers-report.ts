/**
 * bench/results/peers.md and peers.svg from the peer harness's TSVs (bench/peers/run.ts plus
 * peers-hints): the small series (peers-small.tsv) and the default one (peers.tsv), whichever exist.
 * usage: node dist/bench/peers-report.js RESULTS_DIR [OUT.md OUT.svg]
 * The tables are what the README's "How it compares" shows; the chart has one row per series, each
 * with two panels: stored bytes after each checkpoint (log scale) and ingest ms per checkpoint.
 */
import fs from 'node:fs'
import path from 'node:path'
import { IDEAL_LABEL, TOOLS } from './peers/tools.js'

const [dir, outMdArg, outSvgArg] = process.argv.slice(2)
if (!dir || !fs.existsSync(dir)) {
  process.stderr.write('usage: peers-report RESULTS_DIR [OUT.md OUT.svg]\n')
  process.exit(2)
}
const outMd = outMdArg ?? path.join(dir, 'peers.md')
const outSvg = outSvgArg ?? path.join(dir, 'peers.svg')

type Row = Record<string, string>
function readTsv(file: string): Row[] {
  if (!fs.existsSync(file)) return []
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'))
  const head = lines[0]!.split('\t')
  return lines.slice(1).map((l) => Object.fromEntries(l.split('\t').map((v, i) => [head[i]!, v])))
}

interface Series {
  key: 'small' | 'default'
  title: string
  rows: Row[]
  ingest: Row[]
  env: string[]
  /** the full-scan ingest target: ckpt ≤ this × qemu-img's 64 KiB chain */
  ingestRatio: number
}
const SERIES: Series[] = (
  [
    ['small', 'peers-small', 'Small series (30 checkpoints of 64 MiB RAM + 128 MiB disk)', 1.0],
    ['default', 'peers', 'Default series (100 checkpoints of 256 MiB RAM + 512 MiB disk, the benches\' S)', 0.8],
  ] as const
).map(([key, base, title, ingestRatio]) => {
  const envFile = path.join(dir, `${base}.env`)
  return {
    key, title, ingestRatio,
    rows: readTsv(path.join(dir, `${base}.tsv`)),
    ingest: readTsv(path.join(dir, `${base}.ingest.tsv`)),
    env: fs.existsSync(envFile) ? fs.readFileSync(envFile, 'utf8').trim().split('\n').map((l) => l.replace(/^# /, '')) : [],
  }
}).filter((s) => s.rows.length > 0)

const LABEL: Record<string, string> = {
  ideal: IDEAL_LABEL,
  'ckpt-lib-dirty-hints': '**ckpt, library, dirty-page hints**',
  ...Object.fromEntries(TOOLS.map((t) => [t.name, t.name === 'ckpt' ? `**${t.label}**` : t.label])),
}
const DEDUP = new Set(TOOLS.filter((t) => t.dedup).map((t) => t.name))
const VERIFY_NOTE = Object.fromEntries(TOOLS.filter((t) => t.verifyNote).map((t) => [t.name, ` (${t.verifyNote})`]))
const num = (v: string | undefined) => (v === undefined || v === 'NA' || v === '' ? NaN : Number(v))
const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '—')
const fmtS = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '—')
const skipped = (r: Row) => (r.note ?? '').startsWith('skipped')

function table(s: Series): string[] {
  const idealBytes = num(s.rows.find((r) => r.tool === 'ideal')?.repo_bytes)
  const md = [
    '| tool | checkpoints | median ingest ms | p90 ingest ms | ingest CPU s per checkpoint | stored bytes | × ideal | restore last s | verify s | byte-identical |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|',
  ]
  for (const r of s.rows.filter((x) => !skipped(x))) {
    const isIdeal = r.tool === 'ideal'
    const ratio = num(r.repo_bytes) / idealBytes
    const verify = Number.isFinite(num(r.verify_s)) ? fmtS(num(r.verify_s)) + (VERIFY_NOTE[r.tool!] ?? '') + (r.verify_ok === 'no' ? ' FAILED' : '') : '—'
    const note = r.note && r.note !== '-' && !r.tool!.startsWith('ckpt-lib') ? ` (${r.note})` : ''
    md.push(
      `| ${LABEL[r.tool!] ?? r.tool} | ${r.checkpoints} | ${isIdeal ? '—' : fmtInt(num(r.median_ingest_ms))} | ${isIdeal ? '—' : fmtInt(num(r.p90_ingest_ms))} | ${isIdeal ? '—' : fmtS(num(r.ingest_cpu_s) / num(r.checkpoints))} | ${fmtInt(num(r.repo_bytes))} | ${Number.isFinite(ratio) ? ratio.toFixed(2) : '—'} | ${fmtS(num(r.restore_last_s))} | ${verify} | ${r.restore_ok === 'NA' || !r.restore_ok ? '—' : r.restore_ok}${note} |`,
    )
  }
  const skip = s.rows.filter(skipped)
  if (skip.length) md.push('', `Not measured: ${skip.map((r) => `${r.tool} (${r.note!.replace(/^skipped: /, '')})`).join('; ')}.`)
  return md
}

/** the targets of issue 14, each against the peers measured in the same run */
function targets(s: Series): string[] {
  const by = (t: string) => s.rows.find((r) => r.tool === t && r.note === '-')
  const ck = by('ckpt')
  if (!ck) return []
  const q = by('qemu-chain')
  const ideal = by('ideal')
  const lib = by('ckpt-lib-dirty-hints')
  const out: string[][] = []
  const served = by('ckpt-serve')
  const vs = (what: string, col: string, unit: string, scale: number, limit: number, digits: number, mineRow: Row = ck) => {
    if (!q) return
    const mine = num(mineRow[col]) * scale
    const theirs = num(q[col]) * scale
    out.push([what, `${mine.toFixed(digits)} ${unit}`, `${theirs.toFixed(digits)} ${unit}`, `${(mine / theirs).toFixed(2)} ×`, mine <= limit * theirs ? 'yes' : 'NO'])
  }
  const ingest = `CLI full-scan ingest, median per checkpoint ≤ ${s.ingestRatio.toFixed(1)} × qemu-img's 64 KiB chain`
  const restore = "CLI restore of the last checkpoint ≤ 0.8 × qemu-img's (convert from the 64 KiB chain)"
  vs(ingest, 'median_ingest_ms', 'ms', 1, s.ingestRatio, 0)
  if (served) vs(`${ingest}, with \`ckpt serve\``, 'median_ingest_ms', 'ms', 1, s.ingestRatio, 0, served)
  vs(restore, 'restore_last_s', 's', 1, 0.8, 2)
  if (served) vs(`${restore}, with \`ckpt serve\``, 'restore_last_s', 's', 1, 0.8, 2, served)
  if (ideal) {
    const r = num(ck.repo_bytes) / num(ideal.repo_bytes)
    out.push(['stored bytes ≤ 1.05 × ideal', fmtInt(num(ck.repo_bytes)), `${fmtInt(num(ideal.repo_bytes))} (ideal)`, `${r.toFixed(3)} ×`, r <= 1.05 ? 'yes' : 'NO'])
  }
  const dedup = s.rows.filter((r) => DEDUP.has(r.tool!) && r.note === '-' && Number.isFinite(num(r.restore_last_s))).sort((a, b) => num(a.restore_last_s) - num(b.restore_last_s))[0]
  if (dedup) out.push(['CLI restore of the last checkpoint below every deduplicating peer', `${fmtS(num(ck.restore_last_s))} s`, `${fmtS(num(dedup.restore_last_s))} s (${dedup.tool})`, `${(num(ck.restore_last_s) / num(dedup.restore_last_s)).toFixed(2)} ×`, num(ck.restore_last_s) < num(dedup.restore_last_s) ? 'yes' : 'NO'])
  if (s.key === 'default') out.push(['CLI deep verify ≤ 1.5 s (process start included)', `${fmtS(num(ck.verify_s))} s`, '—', '—', num(ck.verify_s) <= 1.5 ? 'yes' : 'NO'])
  if (lib) out.push(['library commit with dirty hints, median ≤ 10 ms', `${num(lib.median_ingest_ms).toFixed(1)} ms`, '—', '—', num(lib.median_ingest_ms) <= 10 ? 'yes' : 'NO'])
  return ['| target | ckpt | peer | ratio | met |', '|---|---:|---:|---:|---|', ...out.map((t) => `| ${t.join(' | ')} |`)]
}

const md: string[] = ['# ckpt side by side with its peers', '']
for (const s of SERIES) {
  md.push(`## ${s.title}`, '', ...s.env.map((l) => `- ${l}`), '', ...table(s), '')
  const t = targets(s)
  if (t.length) md.push('Targets (issue 14), same run:', '', ...t, '')
}
md.push(
  'Ingest times are medians over the checkpoints, one process per checkpoint timed from outside (wall; CPU = user + system from /usr/bin/time, summed over the ingests, divided by their number). The machine has 2 cores and is shared with other work: wall times vary with its load (see the load average above; with the tools interleaved, every tool sees the same load); CPU seconds vary less; sizes are exact.',
  '',
  'Reproduce: `npm run bench:peers` (PEERS_SERIES=small|default|both, TOOLS=...; the peers: `apt-get install -y restic borgbackup casync qemu-utils time zstd`; see bench/peers/run.ts).',
  '',
)

// ---- chart

const COLORS: Record<string, string> = {
  ideal: '#888888', ckpt: '#d62728', 'ckpt-lib-dirty-hints': '#ff7f0e', 'qemu-chain': '#1f77b4', 'qemu-chain-4k': '#17becf',
  'borg-fixed4k': '#2ca02c', borg: '#98df8a', restic: '#9467bd', casync: '#8c564b', 'zstd-countonly': '#e377c2', zstd: '#e377c2',
}
type Pt = { x: number; bytes: number; ms: number }
const W = 1100
const RH = 420
const pad = { l: 70, t: 34, b: 44 }
const pw = (W - 3 * 16 - 2 * pad.l - 250) / 2
const ph = RH - pad.t - pad.b
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/\*/g, '')

function quantileOf(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))]! : 1
}

function chart(all: Series[]): string {
  const H = RH * Math.max(1, all.length)
  const svg = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
  ]
  all.forEach((s, k) => svg.push(...seriesRow(s, k * RH)))
  svg.push('</svg>')
  return svg.join('\n') + '\n'
}

function seriesRow(s: Series, y0: number): string[] {
  const series = new Map<string, Pt[]>()
  for (const r of s.ingest) {
    const list = series.get(r.tool!) ?? []
    list.push({ x: Number(r.idx) + 1, bytes: Number(r.repo_bytes_after), ms: Number(r.wall_s) * 1000 })
    series.set(r.tool!, list)
  }
  const out: string[] = []
  const maxX = Math.max(1, ...[...series.values()].flatMap((p) => p.map((q) => q.x)))
  const allBytes = [...series.values()].flatMap((p) => p.map((q) => q.bytes)).filter((b) => b > 0)
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...allBytes, 1e8))))
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...allBytes, 1e9))))
  const allMs = [...series.entries()].filter(([t]) => t !== 'ideal').flatMap(([, p]) => p.slice(1).map((q) => q.ms))
  const msHi = Math.max(100, Math.ceil(quantileOf(allMs, 0.98) / 500) * 500)
  const panel = (x0: number, title: string, yOf: (p: Pt) => number, ticks: { v: number; label: string }[], skipIdeal: boolean) => {
    const X = (x: number) => x0 + ((x - 1) / Math.max(1, maxX - 1)) * pw
    const top = y0 + pad.t
    out.push(`<text x="${x0 + pw / 2}" y="${y0 + 18}" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>`)
    out.push(`<rect x="${x0}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`)
    for (const t of ticks) {
      const y = top + ph - t.v * ph
      out.push(`<line x1="${x0}" x2="${x0 + pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/><text x="${x0 - 4}" y="${y + 4}" text-anchor="end">${t.label}</text>`)
    }
    for (let k = 0; k <= 4; k++) {
      const xv = 1 + Math.round(((maxX - 1) * k) / 4)
      out.push(`<text x="${X(xv)}" y="${top + ph + 14}" text-anchor="middle">${xv}</text>`)
    }
    out.push(`<text x="${x0 + pw / 2}" y="${y0 + RH - 10}" text-anchor="middle">checkpoints ingested</text>`)
    for (const [tool, pts] of series) {
      if (skipIdeal && tool === 'ideal') continue
      const use = skipIdeal ? pts.slice(1) : pts
      const d = use.map((p, i) => `${i ? 'L' : 'M'}${X(p.x).toFixed(1)},${(top + ph - Math.max(0, Math.min(1, yOf(p))) * ph).toFixed(1)}`).join('')
      out.push(`<path d="${d}" fill="none" stroke="${COLORS[tool] ?? '#000'}" stroke-width="${tool.startsWith('ckpt') ? 2.5 : 1.4}"${tool === 'ideal' ? ' stroke-dasharray="5,3"' : ''}/>`)
    }
  }
  const logY = (b: number) => (Math.log10(Math.max(b, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))
  const byteTicks: { v: number; label: string }[] = []
  for (let e = Math.log10(lo); e <= Math.log10(hi); e++) byteTicks.push({ v: logY(10 ** e), label: e >= 9 ? `${10 ** (e - 9)} GB` : `${10 ** (e - 6)} MB` })
  const name = s.key === 'small' ? 'small series' : 'default series'
  panel(pad.l, `${name}: stored bytes (log scale)`, (p) => logY(p.bytes), byteTicks, false)
  const msTicks = [0, 0.25, 0.5, 0.75, 1].map((v) => ({ v, label: `${Math.round(v * msHi)} ms` }))
  panel(pad.l * 2 + 16 + pw, `${name}: ingest ms per checkpoint (after the first)`, (p) => p.ms / msHi, msTicks, true)
  let ly = y0 + pad.t + 6
  const lx = W - 250
  for (const tool of series.keys()) {
    const label = (LABEL[tool] ?? tool).replace(/\*\*/g, '').replace(/ \(lower bound.*\)/, ' (lower bound)')
    out.push(`<line x1="${lx}" x2="${lx + 18}" y1="${ly}" y2="${ly}" stroke="${COLORS[tool] ?? '#000'}" stroke-width="3"${tool === 'ideal' ? ' stroke-dasharray="5,3"' : ''}/><text x="${lx + 24}" y="${ly + 4}">${esc(label.length > 40 ? label.slice(0, 39) + '…' : label)}</text>`)
    ly += 18
  }
  return out
}

fs.writeFileSync(outMd, md.join('\n'))
process.stdout.write(md.join('\n'))
fs.writeFileSync(outSvg, chart(SERIES))
