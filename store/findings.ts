/**
 * What verification reports: typed findings (SPEC.md §16.1). The kinds are stable names a script may
 * match on; the message is for people.
 */
export type FindingKind =
  | 'missing-pack'
  | 'truncated-pack'
  | 'bad-pack-header'
  | 'bad-pack-footer'
  | 'damaged-entry'
  | 'unindexed-entry'
  | 'dangling-index-entry'
  | 'bad-index-value'
  | 'orphan-pack'
  | 'missing-block'
  | 'hash-mismatch'
  | 'undecodable-block'
  | 'bad-node'
  | 'bad-manifest'
  | 'dangling-ref'
  | 'dangling-catalog-entry'
  | 'bad-catalog-entry'
  | 'uncatalogued-checkpoint'
  | 'bad-pack-record'
  | 'corrupt-index'
  | 'bad-record'
  | 'catalog-mismatch'
  | 'missing-record'
  | 'unlisted-pack'
  | 'leftover-pack'
  | 'index-unavailable'
  | 'bad-scan-cache'
  | 'bad-checksum'

export type Severity = 'error' | 'warning' | 'info'

export interface CheckpointRef {
  timeline: string
  vtime: string
  cid: string
}

export interface Finding {
  phase: 'structure' | 'dag' | 'data'
  kind: FindingKind
  severity: Severity
  message: string
  cid?: string
  pack?: number
  offset?: number
  length?: number
  path?: string
  /** checkpoints that reach the damaged block (dag and data phases) */
  checkpoints?: CheckpointRef[]
}
