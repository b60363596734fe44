/**
 * Argument parsing for `ckpt`: node:util parseArgs (strict) plus the few value syntaxes the commands
 * share. Every failure here is a UsageError (exit 2).
 */
import path from 'node:path'
import { parseArgs } from 'node:util'
import { UsageError } from './errors.js'

export type OptionSpec = { type: 'string' | 'boolean'; short?: string; multiple?: boolean }

/** What parse() returns: parseArgs' precise result type for these options. */
export type Parsed<O extends Record<string, OptionSpec>> = ReturnType<typeof parseArgs<{ args: string[]; options: O; strict: true; allowPositionals: true }>>

/** Options every command takes. */
export const COMMON = {
  store: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies Record<string, OptionSpec>

/** The option of commands that draw a progress line (add, restore, export, import, verify, repair, gc). */
export const QUIET = {
  quiet: { type: 'boolean', short: 'q' },
} as const satisfies Record<string, OptionSpec>

/**
 * `--name VALUE` as `--name=VALUE` for a string option whose VALUE starts with a single '-' (-5, -draft):
 * parseArgs would call it ambiguous; the option's own check then says what is wrong with it (--vtime -5:
 * "must be a non-negative integer"). A VALUE starting with '--' stays ambiguous (a forgotten value).
 */
function attachDashValues(argv: string[], options: Record<string, OptionSpec>): string[] {
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--') {
      out.push(...argv.slice(i))
      break
    }
    const next = argv[i + 1]
    if (a.startsWith('--') && !a.includes('=') && options[a.slice(2)]?.type === 'string' && next !== undefined && /^-[^-]/.test(next)) {
      out.push(`${a}=${next}`)
      i++
    } else out.push(a)
  }
  return out
}

/** parseArgs with strict checking and positionals; its errors become UsageErrors of `command`. */
export function parse<const O extends Record<string, OptionSpec>>(command: string, argv: string[], options: O): Parsed<O> {
  try {
    return parseArgs({ args: attachDashValues(argv, options), options, strict: true, allowPositionals: true })
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err)
    const ambiguous = /^Option '(--[^']+)' argument is ambiguous/.exec(msg)
    if (ambiguous) {
      const at = argv.indexOf(ambiguous[1]!)
      const next = at >= 0 ? argv[at + 1] : undefined
      throw new UsageError(`${ambiguous[1]} is missing its value${next !== undefined ? ` (${JSON.stringify(next)} is taken for an option; write ${ambiguous[1]}=${next} for a value)` : ''}`, command)
    }
    // parseArgs appends advice (about '--', or '--name=-XYZ') after the first sentence, which is the point
    throw new UsageError(msg.split('\n')[0]!.split('. To specify a positional')[0]!.replace(/\.$/, ''), command)
  }
}

/** `--help`/`-h` anywhere before a `--`. */
export function wantsHelp(argv: string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false
    if (a === '--help' || a === '-h') return true
  }
  return false
}

/** `--json` anywhere before a `--` (for error output even when parsing failed). */
export function wantsJson(argv: string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false
    if (a === '--json') return true
  }
  return false
}

export function required<T>(value: T | undefined, option: string, command: string): T {
  if (value === undefined) throw new UsageError(`missing required option ${option}`, command)
  return value
}

/** The store directory: --store, else CKPT_STORE; absolute. */
export function storeDir(value: string | undefined, command: string, env: NodeJS.ProcessEnv = process.env): string {
  const dir = value ?? (env.CKPT_STORE ? env.CKPT_STORE : undefined)
  if (dir === undefined || dir === '') throw new UsageError('missing --store DIR (or set CKPT_STORE)', command)
  return path.resolve(dir)
}

const MAX_U64 = 0xffffffffffffffffn

/** A virtual time: a decimal integer in [0, 2^64). */
export function parseVtime(text: string, option: string, command: string): bigint {
  if (!/^\d+$/.test(text)) throw new UsageError(`${option} must be a non-negative integer, not ${JSON.stringify(text)}`, command)
  const v = BigInt(text)
  if (v > MAX_U64) throw new UsageError(`${option} must be below 2^64`, command)
  return v
}

/** A byte size: 4096, 4k, 64K, 1M (k = 1024). */
export function parseSize(text: string, what: string, command: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(text)
  if (!m) throw new UsageError(`${what} must be a number of bytes like 4096, 4k, 64K or 1M, not ${JSON.stringify(text)}`, command)
  const n = Number(m[1]) * (m[2] === '' ? 1 : m[2]!.toLowerCase() === 'k' ? 1024 : 1024 * 1024)
  if (!Number.isSafeInteger(n)) throw new UsageError(`${what} is too large`, command)
  return n
}

/**
 * A percentage: `50`, `50%`, `12.5` (decimal digits, an optional fraction, an optional `%`), in
 * [0, 100], or in (0, 100] when `zero` is false. The one parser of `gc --threshold`, `gc --max-unused`
 * and `verify --sample`; returns the percentage (50 for "50%").
 */
export function parsePercent(text: string, option: string, command: string, opts: { zero?: boolean } = {}): number {
  const zero = opts.zero !== false
  const m = /^(\d+(?:\.\d+)?)%?$/.exec(text)
  const pct = m ? Number(m[1]) : NaN
  if (!(pct <= 100) || (!zero && pct === 0)) throw new UsageError(`${option} must be a percentage in ${zero ? '[' : '('}0, 100], not ${JSON.stringify(text)}`, command)
  return pct
}

/** `KEY=VALUE` (split at the first `=`; KEY must not be empty). */
export function parsePair(text: string, what: string, command: string): [string, string] {
  const eq = text.indexOf('=')
  if (eq <= 0) throw new UsageError(`${what} must look like NAME=VALUE, not ${JSON.stringify(text)}`, command)
  return [text.slice(0, eq), text.slice(eq + 1)]
}

export interface RegionArg {
  name: string
  file: string
  /** from a `:CHUNKSIZE` suffix */
  chunkSize?: number
}

/**
 * `REGION=FILE[:CHUNKSIZE]`. A final `:` followed by digits (and maybe a unit letter) is the chunk size;
 * any other colon belongs to the file name.
 */
export function parseRegionArg(text: string, command: string): RegionArg {
  const [name, rest] = parsePair(text, 'a region argument', command)
  const m = /^(.+):(\d+[A-Za-z]?)$/.exec(rest)
  if (!m) {
    if (rest === '') throw new UsageError(`region ${name} has no file`, command)
    return { name, file: rest }
  }
  return { name, file: m[1]!, chunkSize: parseSize(m[2]!, `chunk size of region ${name}`, command) }
}
