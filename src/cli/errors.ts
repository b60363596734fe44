/**
 * Exit codes and error reporting of the `ckpt` command (SPEC.md, "CLI exit codes", lists EXIT).
 */
import { CkptError, errnoCode, fsError, isCkptError } from '../../codecs/errors.js'
import { esc } from './format.js'

/** Process exit statuses of `ckpt`. */
export const EXIT = {
  /** success */
  OK: 0,
  /** data error: any CkptError other than the usage ones (CKPT_NOT_FOUND, CKPT_HASH_MISMATCH, CKPT_VTIME_ORDER, ...) */
  DATA: 1,
  /** usage error: unknown command or option, missing required option, bad number, CKPT_BAD_ARGUMENT */
  USAGE: 2,
  /** the store cannot be opened (CKPT_LOCKED, CKPT_BAD_STORE, CKPT_VERSION, ... at open time) */
  STORE: 3,
} as const

export type ExitCode = (typeof EXIT)[keyof typeof EXIT]

/** The `code` of a usage error in `--json` error output (usage errors are the CLI's, not the library's). */
export const USAGE_CODE = 'USAGE'

/** A command line the CLI cannot act on; `command` names the command whose --help would help. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message)
    this.name = 'UsageError'
  }
}

/** A CkptError raised while opening the store (exit 3 rather than 1). */
export class StoreOpenError extends Error {
  constructor(readonly error: CkptError) {
    super(error.message, { cause: error })
    this.name = 'StoreOpenError'
  }
}

/** Node's system errors (ENOENT, EACCES, ...) carry code and syscall: reported in one line, no stack. */
function isSystemError(err: unknown): err is Error & { code: string; syscall: string } {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string' && typeof (err as { syscall?: unknown }).syscall === 'string'
}

export interface Reported {
  exit: ExitCode
  /** the one line for stderr (without trailing newline; the stack for unexpected errors) */
  line: string
  /** the object --json writes to stdout */
  json: { error: { code: string; message: string } }
}

/**
 * An operating-system error as the CkptError it stands for when errnoCode() has a code for it (a full
 * disk, a permission, a read-only medium), wherever in the CLI it surfaced. The worker pool hands a
 * worker's system error on as a CkptError whose code is the errno: the same.
 */
function asCkptError(err: unknown): unknown {
  if (err instanceof CkptError && !err.code.startsWith('CKPT_')) {
    // "ENOSPC: no space left on device, write" -> said while doing "write"
    const m = /, ([^,]+)$/.exec(err.message)
    return fsError(Object.assign(new Error(err.message), { code: err.code }), m ? m[1]! : 'in a worker thread')
  }
  if (isSystemError(err) && errnoCode(err) !== 'CKPT_IO') {
    const file = (err as { path?: unknown }).path
    return fsError(err, typeof file === 'string' ? `cannot ${err.syscall} ${file}` : `${err.syscall} failed`, typeof file === 'string' ? { path: file } : {})
  }
  return err
}

/** How an error thrown by a command is reported: exit status, stderr line (escaped: esc()), JSON object. */
export function classify(error: unknown): Reported {
  const r = report(asCkptError(error))
  // a stack keeps its lines; each is escaped
  return { ...r, line: r.line.split('\n').map(esc).join('\n') }
}

function report(err: unknown): Reported {
  if (err instanceof UsageError) {
    const hint = err.command ? ` (see: ckpt ${err.command} --help)` : ' (see: ckpt --help)'
    return { exit: EXIT.USAGE, line: `ckpt: usage: ${err.message}${hint}`, json: { error: { code: USAGE_CODE, message: err.message } } }
  }
  if (err instanceof StoreOpenError) {
    const e = asCkptError(err.error) as CkptError
    return { exit: EXIT.STORE, line: `ckpt: ${e.code}: ${e.message}`, json: { error: { code: e.code, message: e.message } } }
  }
  if (isCkptError(err)) {
    const exit = err.code === 'CKPT_BAD_ARGUMENT' ? EXIT.USAGE : EXIT.DATA
    return { exit, line: `ckpt: ${err.code}: ${err.message}`, json: { error: { code: err.code, message: err.message } } }
  }
  if (isSystemError(err)) {
    // Node's message already starts with the code: "ENOENT: no such file or directory, open 'x'"
    const msg = err.message.startsWith(err.code) ? err.message : `${err.code}: ${err.message}`
    return { exit: EXIT.DATA, line: `ckpt: ${msg}`, json: { error: { code: err.code, message: err.message } } }
  }
  const e = err instanceof Error ? err : new Error(String(err))
  return { exit: EXIT.DATA, line: `ckpt: ${e.stack ?? e.message}`, json: { error: { code: 'INTERNAL', message: e.message } } }
}
