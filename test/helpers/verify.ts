import { verifyStore, type CkptStore, type Finding, type VerifyOptions, type VerifySummary } from '../../src/index.js'

/** Every finding of verifyStore and its summary. */
export async function runVerify(store: CkptStore, opts: VerifyOptions = {}): Promise<{ findings: Finding[]; summary: VerifySummary }> {
  const it = verifyStore(store, opts)
  const findings: Finding[] = []
  for (;;) {
    const r = await it.next()
    if (r.done) return { findings, summary: r.value }
    findings.push(r.value)
  }
}
