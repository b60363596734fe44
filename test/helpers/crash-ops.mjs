// Child process for the import and repair crash tests:
//   node crash-ops.mjs import <storeDir> <bundle>    imports the bundle, prints DONE
//   node crash-ops.mjs repair <storeDir> <bundle>    repairs (--from the bundle, --rebuild-index), prints DONE
//   node crash-ops.mjs thin <storeDir> <policy>      thins timeline rec by the policy, prints DONE
//   node crash-ops.mjs gc <storeDir> <threshold>     gc at the threshold (0..1), prints DONE
// CKPT_TEST_STAGE_LIMIT (bytes) makes an import commit its blocks in small steps (ImportOptions.stageLimit).
import fs from 'node:fs'
import { fileSource, importBundle, openStore, repairStore } from '../../dist/src/index.js'

const say = (line) => fs.writeSync(1, line + '\n')
const [op, dir, bundle] = process.argv.slice(2)
say('READY')
if (op === 'import') {
  const store = await openStore(dir)
  const stageLimit = Number(process.env.CKPT_TEST_STAGE_LIMIT) || undefined
  await importBundle(store, fileSource(bundle), { stageLimit })
  await store.close()
} else if (op === 'repair') {
  await repairStore(dir, { from: bundle, rebuildIndex: true })
} else if (op === 'thin') {
  const store = await openStore(dir, { mustExist: true })
  await store.thin('rec', bundle)
  await store.close()
} else if (op === 'gc') {
  const store = await openStore(dir, { mustExist: true })
  await store.gc({ threshold: Number(bundle) })
  await store.close()
}
say('DONE')
