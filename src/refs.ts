/** Names and references: validation shared by the library and the CLI. */
import { CkptError } from '../codecs/errors.js'
import { nameProblem, PART_NAME_RE, quoteName, TIMELINE_NAME_RE, type NameKind } from '../codecs/names.js'

/**
 * Timeline and ref names (SPEC.md §3.4 "Names", codecs/names.ts): `/`-separated segments, each
 * `[A-Za-z0-9][A-Za-z0-9._:+-]*`, at most 200 bytes in all.
 */
export const NAME_RE = TIMELINE_NAME_RE
/** Region and blob names: one segment of at most 64 bytes, without ':' and '+'. */
export const REGION_RE = PART_NAME_RE
export const MAX_VTIME = 0xffffffffffffffffn

/**
 * Checks a name that enters the store (API, CLI, import) by the one rule of codecs/names.ts:
 * `region` and `blob` names (or any check given REGION_RE) as one segment, every other kind
 * (timeline, ref, ...) as a timeline name. A further pattern `re` other than NAME_RE/REGION_RE must
 * match too (it can only narrow the rule). CKPT_BAD_ARGUMENT names the reason.
 */
export function checkName(kind: string, name: unknown, re: RegExp = NAME_RE): string {
  if (typeof name !== 'string') throw new TypeError(`${kind} name must be a string`)
  const part = re === REGION_RE || kind === 'region' || kind === 'blob'
  const rule: NameKind = part ? (kind === 'blob' ? 'blob' : 'region') : kind === 'ref' ? 'ref' : 'timeline'
  let problem = nameProblem(rule, name)
  if (problem === undefined && re !== NAME_RE && re !== REGION_RE && !re.test(name)) problem = `does not match ${re}`
  if (problem !== undefined) throw new CkptError('CKPT_BAD_ARGUMENT', `invalid ${kind} name ${quoteName(name)}: it ${problem}`, { [kind]: name })
  return name
}

export function toVtime(v: unknown, what = 'vtime'): bigint {
  let b: bigint
  if (typeof v === 'bigint') b = v
  else if (typeof v === 'number') {
    // a number past 2^53 has lost its low digits already: only a bigint says which vtime is meant
    if (Number.isInteger(v) && Math.abs(v) > Number.MAX_SAFE_INTEGER) {
      throw new CkptError('CKPT_BAD_ARGUMENT', `${what} ${v} is beyond Number.MAX_SAFE_INTEGER (2^53 - 1), where numbers lose precision: use a bigint`, { [what]: String(v) })
    }
    if (!Number.isSafeInteger(v)) throw new CkptError('CKPT_BAD_ARGUMENT', `${what} must be an integer`, { [what]: v })
    b = BigInt(v)
  } else if (typeof v === 'string' && /^\d+$/.test(v)) b = BigInt(v)
  else throw new CkptError('CKPT_BAD_ARGUMENT', `${what} must be a non-negative integer`, { [what]: String(v) })
  if (b < 0n || b > MAX_VTIME) throw new CkptError('CKPT_BAD_ARGUMENT', `${what} must be in [0, 2^64)`, { [what]: b.toString() })
  return b
}
