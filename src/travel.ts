/**
 * Time travel (SPEC.md §23): restore by difference into a buffer or file that holds another
 * checkpoint's content, and the cursor a debugger keeps over all regions and blobs of a timeline.
 */
import type { CID } from 'multiformats/cid'
import type { LogEntry } from './types.js'

/** Options of restore(): without `from`, a whole restore. */
export interface RestoreOptions {
  /** the checkpoint the destination holds (a buffer or a regular file / block device): only the chunks that differ are written */
  from?: string | CID
  /** chunks of the region written since `from` was restored (the same dirty hints checkpoint() takes) */
  dirty?: Iterable<number>
  /** hash every chunk of the destination and rewrite each that is not B's: B exactly whatever the destination held */
  check?: boolean
}

/** What a jump wrote, per region. */
export interface JumpRegion {
  /** chunks written (stored chunks read and verified, plus holes zero-filled) */
  chunksWritten: number
  bytesWritten: number
  /** checked mode: chunks that held neither B's content nor were in the diff or the dirty set */
  mismatched?: number
}

export interface JumpResult {
  from: LogEntry | undefined
  to: LogEntry
  regions: Record<string, JumpRegion>
  /** blobs whose content changed */
  blobsChanged: string[]
  ms: number
}
