/** Per-topic reference counts across the tabs (ports) of one worker: subscribe upstream on the
 * first interested port, unsubscribe when the last one leaves. */
export class RefCounts<P> {
  private readonly byTopic = new Map<string, Set<P>>()

  /** Adds `port`'s interest in `topic`; true when it is the topic's first (subscribe upstream). */
  acquire(topic: string, port: P): boolean {
    let ports = this.byTopic.get(topic)
    const first = ports === undefined
    if (!ports) {
      ports = new Set()
      this.byTopic.set(topic, ports)
    }
    ports.add(port)
    return first
  }

  /** Removes `port`'s interest; true when nobody is left (unsubscribe upstream). */
  release(topic: string, port: P): boolean {
    const ports = this.byTopic.get(topic)
    if (!ports || !ports.delete(port)) return false
    if (ports.size === 0) {
      this.byTopic.delete(topic)
      return true
    }
    return false
  }

  /** Removes a port that went away; returns the topics nobody wants any more. */
  releaseAll(port: P): string[] {
    const orphaned: string[] = []
    for (const topic of [...this.byTopic.keys()]) {
      if (this.release(topic, port)) orphaned.push(topic)
    }
    return orphaned
  }

  /** The ports interested in `topic`. */
  ports(topic: string): ReadonlySet<P> {
    return this.byTopic.get(topic) ?? new Set()
  }

  /** Every topic with at least one port. */
  topics(): string[] {
    return [...this.byTopic.keys()]
  }
}
