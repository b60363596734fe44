// Typed face of rng.mjs (the crash child, plain JS, shares the implementation).
import * as impl from './rng.mjs'

export interface Rng {
  u32(): number
  float(): number
  int(lo: number, hi: number): number
  chance(p: number): boolean
  pick<T>(arr: readonly T[]): T
  bytes(n: number): Uint8Array
  shuffle<T>(arr: T[]): T[]
}

export const mulberry32: (seed: number) => () => number = impl.mulberry32
export const makeRng: (seed: number) => Rng = impl.makeRng as (seed: number) => Rng
