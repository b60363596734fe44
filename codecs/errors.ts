/**
 * Every failure the project reports carries a stable uppercase `code` (listed in SPEC.md §Errors);
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
