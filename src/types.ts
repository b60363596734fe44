/**
 * The library's shared public types (SPEC.md §12), in a module of their own so that the parts that
 * return them need not import the store that uses the parts.
 */
import type { CID } from 'multiformats/cid'

/** One checkpoint in the catalog: which timeline, at which virtual time, and its manifest's CID. */
export interface LogEntry {
  timeline: string
  vtime: bigint
  cid: CID
}
