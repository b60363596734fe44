// Child process of test/remote/remote-crash.test.ts: opens a store and pushes it to a remote, so the
// test can kill it (SIGKILL) at any moment of the push. Usage:
//   node remote-push-child.mjs <storeDir> <remoteUrl>
// AWS_* come from the environment (s3:// remotes). Prints, with fs.writeSync (a line is in the pipe
// before the next statement runs): READY once the store is open, PHASE <phase> <done> <total> for
// each progress event of the push, DONE <json summary> when it resolved.
import fs from 'node:fs'
import { openStore } from '../../dist/src/index.js'

const say = (line) => fs.writeSync(1, line + '\n')
const [dir, url] = process.argv.slice(2)

const store = await openStore(dir, { threads: 0 })
say('READY')
let last = ''
const s = await store.push(url, undefined, {
  onProgress: (p) => {
    const l = `PHASE ${p.phase} ${p.done} ${p.total}`
    if (l !== last) say((last = l))
  },
})
say(`DONE ${JSON.stringify(s)}`)
await store.close()
