/**
 * The part of store/ that worker threads load (src/pipeline/tasks.ts): pack scanning without the
 * index, LevelDB or the repository, so a worker starts without them. src/ reaches store/ through
 * store/index.ts or this file only.
 */
export { scanPackCompact } from './pack-scan.js'
export type { CompactScan } from './pack-scan.js'
