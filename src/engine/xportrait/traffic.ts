/**
 * Host traffic, counted at the session boundary: a `GraphSession` wrapper that adds up the bytes of every feed held
 * in host memory (`location === 'cpu'`: uploaded to the device on a GPU provider) and of every output returned in
 * host memory (downloaded), per graph, with the number of tensors each way. Tensors that stay on the device
 * (`gpu-buffer` feeds and outputs) cost nothing here, so the same counter measures today's path and a
 * device-resident one. `tick()` returns the counts since the last call and starts over (one tick = one call).
 *
 * On the CPU provider nothing crosses a bus: the counts are what WOULD cross on a GPU provider fed the same way.
 * tick-cost.ts computes the same figures from shapes; test/model/analysis-pack.test.ts checks they agree.
 */
import type * as ort from 'onnxruntime-node';
import type { GraphSession } from './networks.ts';

export interface TrafficCounts {
  hostToDevice: number;
  deviceToHost: number;
  uploads: number;
  downloads: number;
}

export interface TrafficTick extends TrafficCounts {
  perGraph: Record<string, TrafficCounts>;
}

const zero = (): TrafficCounts => ({ hostToDevice: 0, deviceToHost: 0, uploads: 0, downloads: 0 });

function hostBytes(t: ort.Tensor): number | null {
  if (t.location !== undefined && t.location !== 'cpu' && t.location !== 'cpu-pinned') return null;
  return (t.data as ArrayBufferView).byteLength;
}

export class TrafficCounter {
  #perGraph = new Map<string, TrafficCounts>();
  /** Totals since the counter was made. */
  readonly total: TrafficCounts = zero();

  record(graph: string, feeds: Record<string, ort.Tensor>, outputs: Record<string, ort.Tensor>): void {
    const g = this.#perGraph.get(graph) ?? zero();
    for (const t of Object.values(feeds)) {
      const b = hostBytes(t);
      if (b === null) continue;
      g.hostToDevice += b;
      g.uploads++;
      this.total.hostToDevice += b;
      this.total.uploads++;
    }
    for (const t of Object.values(outputs)) {
      const b = hostBytes(t);
      if (b === null) continue;
      g.deviceToHost += b;
      g.downloads++;
      this.total.deviceToHost += b;
      this.total.downloads++;
    }
    this.#perGraph.set(graph, g);
  }

  /** The counts since the previous `tick()` (per graph and summed); starts a new interval. */
  tick(): TrafficTick {
    const perGraph = Object.fromEntries(this.#perGraph);
    const sum = zero();
    for (const c of Object.values(perGraph)) {
      sum.hostToDevice += c.hostToDevice;
      sum.deviceToHost += c.deviceToHost;
      sum.uploads += c.uploads;
      sum.downloads += c.downloads;
    }
    this.#perGraph = new Map();
    return { ...sum, perGraph };
  }

  /** Wraps a session so that its runs are counted under `graph`. */
  wrap(graph: string, inner: GraphSession): GraphSession {
    return {
      inputNames: inner.inputNames,
      outputNames: inner.outputNames,
      release: () => inner.release(),
      run: async (feeds, fetches) => {
        const res = await inner.run(feeds, fetches);
        this.record(graph, feeds, res);
        return res;
      },
    };
  }
}
