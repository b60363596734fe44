import { Repository } from '../../store/repository.js'
import { tmpStorePath } from './tmp.js'

/**
 * Blocks `put` stages in a fresh store pass `check` staged, committed and after a reopen, where
 * `cold` reads first (a chain resolved from cold).
 */
export async function readableAcrossReopen<T>(put: (r: Repository) => T, check: (r: Repository, x: T) => void, cold: (r: Repository, x: T) => void): Promise<void> {
  const dir = tmpStorePath('ckpt-bs-')
  let repo = await Repository.open(dir)
  try {
    const x = put(repo)
    check(repo, x)
    await repo.commit([])
    check(repo, x)
    await repo.close()
    repo = await Repository.open(dir, { mustExist: true })
    cold(repo, x)
    check(repo, x)
  } finally {
    await repo.close()
  }
}
