import { afterAll, beforeAll } from 'vitest'
import { pathToFileURL } from 'node:url'
import { openObjectStore } from '../../store/index.js'
import { removeTmpDirs, tmpDir } from '../helpers/tmp.js'
import { runRemoteSuite, type RemoteTarget } from './remote-suite.js'

afterAll(removeTmpDirs)

let n = 0
const fileTarget: RemoteTarget = {
  url: () => pathToFileURL(tmpDir('ckpt-remote-dir-')).href + `/r${n++}`,
  env: {},
  objects: (url) => openObjectStore(url),
}
runRemoteSuite('file://', () => fileTarget)
