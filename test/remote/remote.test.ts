import { afterAll, beforeAll } from 'vitest'
import { pathToFileURL } from 'node:url'
import { openObjectStore } from '../../store/index.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'
import { runRemoteSuite, type RemoteTarget } from './remote-suite.js'
import { ensureBucket, externalS3, startS3rver, type TestS3 } from '../helpers/s3-server.js'

afterAll(removeTmpDirs)

let n = 0
const fileTarget: RemoteTarget = {
  url: () => pathToFileURL(tmpDir('ckpt-remote-dir-')).href + `/r${n++}`,
  env: {},
  conditional: true,
  objects: (url) => openObjectStore(url),
}
runRemoteSuite('file://', () => fileTarget)

// s3rver: a fake S3 server in this process (it ignores If-None-Match: the create-only claims fall
// back to a HEAD before the PUT there, so only the real server below proves the race)
let s3: TestS3 | undefined
beforeAll(async () => {
  s3 = await startS3rver()
  // lazy reads in a store reopened later take AWS_* from the environment, as a user's would
  Object.assign(process.env, s3.env)
}, 30_000)
afterAll(async () => {
  await s3?.close()
})
runRemoteSuite('s3rver', () => ({ url: () => s3!.url(), env: s3!.env, objects: (url) => openObjectStore(url, { env: s3!.env }) }))

const ext = externalS3()
let extReady = false
runRemoteSuite(
  'external S3 (CKPT_TEST_S3_URL)',
  () => {
    if (!extReady) throw new Error('the external bucket was not made')
    let k = 0
    const run = `${Date.now().toString(36)}-${process.pid}`
    return { url: () => `${ext!.url}/${run}-${k++}`, env: ext!.env, conditional: true, objects: (url) => openObjectStore(url, { env: ext!.env }) }
  },
  ext ? undefined : 'CKPT_TEST_S3_URL is not set: CI sets it when it runs a Ceph RADOS Gateway',
)
beforeAll(async () => {
  if (ext) {
    await ensureBucket(ext.url, ext.env)
    extReady = true
  }
}, 60_000)
