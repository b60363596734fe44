/**
 * Text and JSON presentation for `ckpt`: CIDs as base32 text, bigints as decimal strings.
 */
import type { CID } from 'multiformats/cid'
import type { CheckpointManifest as Manifest } from '../store.js'
import type { DiffEntry } from '../diff.js'

/**
 * Text for a terminal: control characters (C0, DEL, C1: ANSI escape sequences, NUL, newlines), the line
 * and paragraph separators and the bidirectional overrides become visible escapes (`\n`, `\x1b`,
 * `\u202e`), so a name or meta value can neither forge output lines nor drive the terminal. Every line
 * of text output goes through it; --json output is escaped by JSON.stringify instead. Idempotent: its
 * output has nothing left to escape.
 */
export function esc(text: string): string {
  return text.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => {
    switch (c) {
      case '\n':
        return '\\n'
      case '\r':
        return '\\r'
      case '\t':
        return '\\t'
    }
    const n = c.charCodeAt(0)
    return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`
  })
}

/** JSON.stringify with bigints as strings (vtimes exceed 2^53). */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))
}

export function cidText(cid: CID | null): string | null {
  return cid === null ? null : cid.toString()
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']

/** 1536 -> "1.5 KiB"; below 1 KiB exact bytes. */
export function humanBytes(n: number): string {
  let v = n
  let u = 0
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024
    u++
  }
  return u === 0 ? `${n} B` : `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${UNITS[u]}`
}

/** `5 B`, `1048576 B (1.00 MiB)` */
export function bytesText(n: number): string {
  return n < 1024 ? `${n} B` : `${n} B (${humanBytes(n)})`
}

/** Left-aligned columns separated by two spaces (cells escaped by esc()). */
export function columns(cells: string[][]): string[] {
  const rows = cells.map((r) => r.map(esc))
  const widths: number[] = []
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)))
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd())
}

/** The JSON view of a manifest (`show --json`). */
export function manifestJson(cid: string, m: Manifest) {
  return {
    cid,
    timeline: m.timeline,
    lineage: m.lineage,
    vtime: m.vtime.toString(),
    wall: new Date(m.wall).toISOString(),
    parent: cidText(m.parent),
    meta: m.meta,
    regions: Object.fromEntries(
      Object.entries(m.regions).map(([name, r]) => [name, { size: r.size, chunkSize: r.chunkSize, fanout: r.fanout, root: cidText(r.root) }]),
    ),
    blobs: Object.fromEntries(Object.entries(m.blobs).map(([name, b]) => [name, { size: b.size, chunks: b.chunks.length }])),
  }
}

/** The text view of a manifest (`show`). */
export function manifestText(cid: string, m: Manifest): string[] {
  const lines = columns([
    ['checkpoint', cid],
    ['timeline', m.timeline],
    ['lineage', m.lineage],
    ['vtime', m.vtime.toString()],
    ['wall', new Date(m.wall).toISOString()],
    ['parent', m.parent ? m.parent.toString() : '(none)'],
  ])
  const meta = Object.entries(m.meta)
  lines.push(meta.length ? 'meta' : 'meta        (none)')
  lines.push(...columns(meta.map(([k, v]) => ['  ' + k, v])))
  const regions = Object.entries(m.regions)
  lines.push(regions.length ? 'regions' : 'regions     (none)')
  lines.push(
    ...columns(
      regions.map(([name, r]) => [
        '  ' + name,
        bytesText(r.size),
        `chunk ${r.chunkSize} B`,
        r.root ? r.root.toString() : '(all zero)',
      ]),
    ),
  )
  const blobs = Object.entries(m.blobs)
  lines.push(blobs.length ? 'blobs' : 'blobs       (none)')
  lines.push(...columns(blobs.map(([name, b]) => ['  ' + name, bytesText(b.size), `${b.chunks.length} chunk${b.chunks.length === 1 ? '' : 's'}`])))
  return lines
}

/** One line of `diff`: `ram: chunks 10-12 changed (3 x 4096 B)`, `blob cpu changed`, ... (names escaped) */
export function diffText(e: DiffEntry): string {
  return esc(diffLine(e))
}

function diffLine(e: DiffEntry): string {
  switch (e.kind) {
    case 'chunks': {
      const n = e.end - e.start
      const which = n === 1 ? `chunk ${e.start}` : `chunks ${e.start}-${e.end - 1}`
      return `${e.region}: ${which} changed (${n} x ${e.chunkSize} B)`
    }
    case 'region-added':
      return `region ${e.region} added`
    case 'region-removed':
      return `region ${e.region} removed`
    case 'region-resized':
      return `region ${e.region} resized`
    case 'blob-added':
      return `blob ${e.blob} added`
    case 'blob-removed':
      return `blob ${e.blob} removed`
    case 'blob-changed':
      return `blob ${e.blob} changed`
  }
}
