// The README's example: node examples/quickstart.mjs (after npm install)
import { openStore } from 'ckpt'

const store = await openStore('./vm.ckpt')
const ram = Buffer.alloc(64 << 20)
const tl = await store.timeline('run-42', { regions: { ram: { size: ram.length, chunkSize: 4096 } } })

const boot = await tl.checkpoint({ vtime: 0n, regions: { ram: { data: ram } }, meta: { label: 'boot' } })
ram.write('hello', 5 * 4096)                                  // the guest dirties page 5
const ck = tl.checkpoint({ vtime: 10_000_000n, regions: { ram: { data: ram, dirty: [5] } }, blobs: { cpu: Buffer.from('regs') } })
ram.fill(0)                                                    // safe: page 5 was copied before checkpoint() returned
const after = await ck

const back = Buffer.alloc(ram.length)
await store.restore('run-42@15000000', 'ram', back)            // nearest checkpoint at or before 15 ms
console.log(after.cid.toString(), back.toString('utf8', 5 * 4096, 5 * 4096 + 5))   // bafy…  hello
for await (const d of store.diff(boot.cid, after.cid)) console.log(d)              // { kind: 'chunks', region: 'ram', start: 5, end: 6, … }
await store.close()
