/** Exponential reconnect backoff with a cap and jitter (the worker's reconnect schedule). */
export interface BackoffOptions {
  /** First delay, ms. */
  baseMs: number
  /** Largest delay, ms. */
  capMs: number
  /** Fraction of the delay randomised: 0.5 → between 50 % and 100 % of it. */
  jitter: number
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 250, capMs: 10_000, jitter: 0.5 }

/** Delay before reconnect attempt `attempt` (0 = the first retry). */
export function backoffDelay(attempt: number, o: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const exp = Math.min(o.capMs, o.baseMs * 2 ** Math.max(0, Math.min(attempt, 30)))
  const j = Math.min(1, Math.max(0, o.jitter))
  return Math.round(exp * (1 - j + j * random()))
}
