/**
 * Bundles: checkpoints as CAR v1 files any IPFS tool can read (SPEC.md, "Bundles").
 *
 * - bundle-export.ts: exportBundle streams a CAR of the checkpoints' DAGs, each block once, in
 *   post-order, leaving out what the receiver has (`since`); exportBundleToFile writes it to a file
 *   durably, as the CLI does.
 * - bundle-import.ts: importBundle re-hashes every block, proves each root's DAG complete and valid,
 *   stores tree nodes as deltas, and makes the checkpoints visible in one atomic catalog commit
 *   (bundle-catalog.ts); fileSource reads a bundle file.
 * - bundle-import-util.ts, bundle-shared.ts: the pieces they use.
 *
 * This module re-exports the public API of both.
 */
export { exportBundle, exportBundleToFile } from './bundle-export.js'
export type { BundleStream, ExportOptions, ExportProgress, ExportSummary } from './bundle-export.js'
export { fileSource, importBundle } from './bundle-import.js'
export type { ImportOptions, ImportSummary } from './bundle-import.js'
