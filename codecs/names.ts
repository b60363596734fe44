/**
 * Names (SPEC.md §3.4 "Names"): the one rule for every name that enters a store — through the API, the
 * CLI, or a bundle's manifests. Pure: no I/O, imports nothing outside codecs/.
 *
 * A **segment** is `[A-Za-z0-9][A-Za-z0-9._:+-]*`: it starts with a letter or digit, so it is never
 * empty, `.`, `..`, or anything starting with `-`, `.`, `/`.
 *
 * - **timeline and ref names**: one or more segments joined by `/`, at most 200 bytes in all
 *   (`run`, `ci/run-42`, `vm:1+2`); never `/abs`, `a//b`, `a/`, `../..`, `a/./b`, `""`.
 * - **region and blob names**: one segment of at most 64 bytes without `:` and `+`
 *   (`ram`, `disk0`, `cpu.state`, `qemu-info`), so it is safe as a file name (`restore --all`).
 *
 * Every allowed character is printable ASCII, so a name's byte length is its character length and a
 * name never carries a control character, an ANSI escape, a NUL, `@` (the `TIMELINE@VTIME` separator)
 * or a path step up.
 */

export const MAX_TIMELINE_NAME = 200
export const MAX_PART_NAME = 64

/** Timeline (and ref) names: `/`-separated segments, 1..200 bytes. */
export const TIMELINE_NAME_RE = /^(?=[^]{1,200}$)[A-Za-z0-9][A-Za-z0-9._:+-]*(?:\/[A-Za-z0-9][A-Za-z0-9._:+-]*)*$/
/** Region and blob names: one segment without ':' and '+', 1..64 bytes. */
export const PART_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

export type NameKind = 'timeline' | 'ref' | 'region' | 'blob'

function isPart(kind: string): boolean {
  return kind === 'region' || kind === 'blob'
}

/** Whether `name` is a valid name of this kind. */
export function isValidName(kind: NameKind, name: unknown): boolean {
  return typeof name === 'string' && (isPart(kind) ? PART_NAME_RE : TIMELINE_NAME_RE).test(name)
}

/**
 * Why `name` is not a valid name of this kind (a short phrase, e.g. `has an empty segment`), or
 * undefined when it is valid.
 */
export function nameProblem(kind: NameKind, name: unknown): string | undefined {
  if (typeof name !== 'string') return 'is not a string'
  if (isValidName(kind, name)) return undefined
  if (name.length === 0) return 'is empty'
  const part = isPart(kind)
  const max = part ? MAX_PART_NAME : MAX_TIMELINE_NAME
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    if (c < 0x20 || c === 0x7f) return `contains the control character ${hex(c)}`
    if (c > 0x7e) return `contains the non-ASCII character ${hex(c)}`
  }
  if (name.length > max) return `is longer than ${max} bytes`
  if (part) {
    for (const ch of name) if (!/[A-Za-z0-9._-]/.test(ch)) return `contains ${JSON.stringify(ch)} (a ${kind} name is letters, digits, '.', '_' and '-')`
    return 'does not start with a letter or digit'
  }
  for (const ch of name) if (!/[A-Za-z0-9._:+/-]/.test(ch)) return `contains ${JSON.stringify(ch)} (a ${kind} name is letters, digits, '.', '_', ':', '+', '-' and '/')`
  if (name.startsWith('/')) return 'starts with /'
  if (name.endsWith('/')) return 'ends with /'
  if (name.includes('//')) return 'has an empty segment'
  const seg = name.split('/').find((s) => !/^[A-Za-z0-9]/.test(s))
  return `has a segment ${JSON.stringify(seg ?? '')} that does not start with a letter or digit`
}

function hex(c: number): string {
  return c <= 0xff ? `0x${c.toString(16).padStart(2, '0')}` : `U+${c.toString(16).toUpperCase().padStart(4, '0')}`
}

/**
 * A name (or any untrusted text) quoted for an error message: printable ASCII as it is, everything
 * else escaped (`\x1b`, `\u202e`), at most `max` characters of it (then `…`). Safe on a terminal.
 */
export function quoteName(name: unknown, max = 80): string {
  if (typeof name !== 'string') return `(${typeof name})`
  let out = ''
  let n = 0
  for (const ch of name) {
    if (n++ >= max) {
      out += '…'
      break
    }
    const c = ch.codePointAt(0)!
    if (c === 0x22 || c === 0x5c) out += '\\' + ch
    else if (c >= 0x20 && c < 0x7f) out += ch
    else if (c <= 0xff) out += `\\x${c.toString(16).padStart(2, '0')}`
    else if (c <= 0xffff) out += `\\u${c.toString(16).padStart(4, '0')}`
    else out += `\\u{${c.toString(16)}}`
  }
  return `"${out}"`
}
