/**
 * Retention policies in virtual time (SPEC.md §13): which checkpoints of a timeline to keep.
 *
 *   policy := rule ("," rule)*
 *   rule   := INTERVAL "@" HORIZON      keep one checkpoint per INTERVAL among those at most HORIZON
 *                                       older than the newest ("10ms@1s": one per 10 ms in the last second)
 *           | "all@" HORIZON            keep every checkpoint within HORIZON
 *           | "last=" N                 keep the newest N whatever their age
 *   INTERVAL, HORIZON := INTEGER UNIT?  units ns us ms s m h d (vtime read as nanoseconds);
 *                                       no unit: raw vtime units (e.g. instructions); HORIZON may be "inf"
 *
 * For a checkpoint of age a = newest.vtime - vtime, the rule that applies is the one with the
 * smallest horizon >= a; older than every horizon, it goes. Under a rule of interval I the vtime axis
 * falls in buckets floor(vtime / I) (absolute, so a bucket never moves as time goes on), and a
 * checkpoint is kept when it is the oldest of its bucket: no older checkpoint (whatever rule applies
 * to that one) lies in the same bucket. When each interval divides the next, thinning after every
 * checkpoint keeps exactly what one thin of the whole recording keeps: the oldest checkpoint of a
 * coarse bucket is the oldest of every finer bucket it was in, so it was never dropped on the way.
 * Never dropped: the newest checkpoint, the newest `last` ones, and protected checkpoints (a label
 * or pin in their meta, or a named ref to them).
 */
import { CkptError } from '../codecs/errors.js'

export interface Rule {
  /** 0 keeps every checkpoint within the horizon */
  interval: bigint
  /** Infinity-like: 2^64 */
  horizon: bigint
}

export interface Policy {
  /** sorted by horizon, increasing */
  rules: Rule[]
  keepLast: number
  /** the spec as given, normalised */
  text: string
}

const UNITS: Record<string, bigint> = { ns: 1n, us: 1000n, ms: 1_000_000n, s: 1_000_000_000n, m: 60_000_000_000n, h: 3_600_000_000_000n, d: 86_400_000_000_000n }
const INF = 1n << 64n

function amount(text: string, what: string, spec: string): bigint {
  if (text === 'inf' || text === 'forever') return INF
  const m = /^(\d+)(ns|us|ms|s|m|h|d)?$/.exec(text)
  if (!m) throw bad(spec, `${what} ${JSON.stringify(text)} is not a number with an optional unit (ns us ms s m h d)`)
  const n = BigInt(m[1]!) * (m[2] ? UNITS[m[2]]! : 1n)
  return n
}

function bad(spec: string, why: string): CkptError {
  return new CkptError('CKPT_BAD_ARGUMENT', `retention policy ${JSON.stringify(spec)}: ${why}`, { policy: spec })
}

export function parsePolicy(spec: string): Policy {
  if (typeof spec !== 'string' || spec.trim() === '') throw bad(String(spec), 'empty')
  const rules: Rule[] = []
  let keepLast = 0
  for (const raw of spec.split(',')) {
    const part = raw.trim()
    const last = /^last=(\d+)$/.exec(part)
    if (last) {
      keepLast = Math.max(keepLast, Number(last[1]))
      continue
    }
    const at = part.split('@')
    if (at.length !== 2) throw bad(spec, `rule ${JSON.stringify(part)} is not INTERVAL@HORIZON, all@HORIZON or last=N`)
    const interval = at[0] === 'all' ? 0n : amount(at[0]!, 'interval', spec)
    const horizon = amount(at[1]!, 'horizon', spec)
    if (at[0] !== 'all' && interval === 0n) throw bad(spec, 'an interval must be positive (use all@HORIZON to keep everything)')
    if (horizon === 0n) throw bad(spec, 'a horizon must be positive')
    rules.push({ interval, horizon })
  }
  rules.sort((a, b) => (a.horizon < b.horizon ? -1 : a.horizon > b.horizon ? 1 : 0))
  for (let i = 1; i < rules.length; i++) if (rules[i]!.horizon === rules[i - 1]!.horizon) throw bad(spec, 'two rules with the same horizon')
  if (rules.length === 0 && keepLast === 0) throw bad(spec, 'no rule')
  const fmt = (n: bigint) => (n === INF ? 'inf' : n.toString())
  const text = [...rules.map((r) => `${r.interval === 0n ? 'all' : fmt(r.interval)}@${fmt(r.horizon)}`), ...(keepLast ? [`last=${keepLast}`] : [])].join(',')
  return { rules, keepLast, text }
}

export interface Candidate {
  vtime: bigint
  /** never dropped (labelled, pinned, named by a ref) */
  protected?: boolean
}

/**
 * Which of `list` (sorted by vtime, increasing) the policy keeps: a boolean per entry. O(n), one pass
 * from the newest back.
 */
export function planKeep(list: readonly Candidate[], policy: Policy): boolean[] {
  const keep = new Array<boolean>(list.length).fill(false)
  if (list.length === 0) return keep
  const now = list[list.length - 1]!.vtime
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!
    const age = now - c.vtime
    let r = 0
    while (r < policy.rules.length && policy.rules[r]!.horizon < age) r++
    if (i >= list.length - Math.max(1, policy.keepLast) || c.protected) keep[i] = true
    if (r === policy.rules.length) continue
    const { interval } = policy.rules[r]!
    // the list is in vtime order, so an older checkpoint in this bucket means the previous one is in it
    if (interval === 0n || i === 0 || list[i - 1]!.vtime / interval !== c.vtime / interval) keep[i] = true
  }
  return keep
}
