/**
 * Every failure the project reports carries a stable uppercase `code` (listed in SPEC.md §10);
 * messages may change between versions, codes may not. Misuse of the API (wrong argument types)
 * throws a plain TypeError instead.
 */
export type CkptErrorCode =
  | 'CKPT_BAD_ARGUMENT'
  | 'CKPT_OUT_OF_RANGE'
  | 'CKPT_WRONG_SIZE'
  | 'CKPT_UNKNOWN_REGION'
  | 'CKPT_VTIME_ORDER'
  | 'CKPT_PREVIOUS_FAILED'
  | 'CKPT_TIMELINE_CONFIG'
  | 'CKPT_NOT_FOUND'
  | 'CKPT_CLOSED'
  | 'CKPT_LOCKED'
  | 'CKPT_HASH_MISMATCH'
  | 'CKPT_BAD_CID'
  | 'CKPT_BAD_NODE'
  | 'CKPT_BAD_MANIFEST'
  | 'CKPT_BAD_PACK'
  | 'CKPT_BAD_INDEX'
  | 'CKPT_CODEC_UNAVAILABLE'
  | 'CKPT_BAD_STORE'
  | 'CKPT_VERSION'
  | 'CKPT_IO'
  | 'CKPT_NO_SPACE'
  | 'CKPT_BAD_BUNDLE'
  | 'CKPT_BUNDLE_INCOMPLETE'
  | 'CKPT_TIMELINE_CONFLICT'
  | 'CKPT_PINNED'
  | 'CKPT_QMP'
  | 'CKPT_BAD_STATE'
  | 'CKPT_PERMISSION'
  | 'CKPT_READ_ONLY'
  | 'CKPT_CATALOG_SUSPECT'
  | 'CKPT_BAD_REMOTE'
  | 'CKPT_REMOTE_UNAVAILABLE'
  | 'CKPT_REMOTE_AUTH'
  | 'CKPT_REMOTE_CONFLICT'
  | 'CKPT_REMOTE_LOCKED'
  | 'CKPT_SERVE_LOST'

export class CkptError extends Error {
  readonly code: CkptErrorCode
  /** Structured facts about the failure (CID, path, offset, ...), stable like the code. */
  readonly details: Record<string, unknown>

  constructor(code: CkptErrorCode, message: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'CkptError'
    this.code = code
    this.details = details
  }
}

export function isCkptError(err: unknown, code?: CkptErrorCode): err is CkptError {
  return err instanceof CkptError && (code === undefined || err.code === code)
}

/**
 * The CKPT_* code of an operating-system error: a full disk, a permission or a read-only medium is
 * said as such (never as damage), anything else is CKPT_IO. ENOENT is left to the caller (what is
 * missing decides between CKPT_NOT_FOUND and damage).
 */
export function errnoCode(err: unknown): CkptErrorCode {
  const code = (err as { code?: unknown } | undefined)?.code
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return 'CKPT_NO_SPACE'
    case 'EACCES':
    case 'EPERM':
      return 'CKPT_PERMISSION'
    case 'EROFS':
      return 'CKPT_READ_ONLY'
    default:
      return 'CKPT_IO'
  }
}

/**
 * A CkptError for an operating-system error while doing `what` (a phrase: "writing out.bin"): the code
 * from errnoCode(), the message without Node's repeated "ENOSPC: ENOSPC:" prefix, the errno in
 * details.errno, the original as the cause.
 */
export function fsError(err: unknown, what: string, details: Record<string, unknown> = {}): CkptError {
  if (err instanceof CkptError) return err
  const code = errnoCode(err)
  const errno = (err as { code?: unknown } | undefined)?.code
  const why: Record<string, string> = {
    CKPT_NO_SPACE: 'no space left on the device',
    CKPT_PERMISSION: 'permission denied',
    CKPT_READ_ONLY: 'the file system is read-only',
  }
  let text = why[code] ?? String((err as Error | undefined)?.message ?? err)
  // Node: "ENOSPC: no space left on device, write" -> the part after the code, once
  if (code === 'CKPT_IO' && typeof errno === 'string' && text.startsWith(errno + ': ')) text = text.slice(errno.length + 2)
  return new CkptError(code, `${what}: ${text}`, { ...details, ...(typeof errno === 'string' ? { errno } : {}) }, err)
}
