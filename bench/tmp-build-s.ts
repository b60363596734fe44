import path from 'node:path'
import { openStore } from '../src/index.js'
import { Workload } from './workload.js'
const dir = process.argv[2]!
const w = new Workload()
const store = await openStore(dir)
const tl = await store.timeline('run', { regions: { ram: { size: w.ram.length, chunkSize: 4096 }, disk: { size: w.disk.length, chunkSize: 65536 } } })
await tl.checkpoint({ vtime: 0n, regions: { ram: { data: w.ram, stable: true }, disk: { data: w.disk, stable: true } }, blobs: { cpu: Buffer.from('cpu state 0') } })
for (let k = 1; k < 100; k++) {
  const d = w.next()
  await tl.checkpoint({ vtime: BigInt(k) * 10_000_000n, regions: { ram: { data: w.ram, dirty: d.pages }, disk: { data: w.disk, dirty: d.clusters } }, blobs: { cpu: Buffer.from(`cpu state ${k}`) } })
}
await store.close()
void path
