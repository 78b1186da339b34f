/**
 * What the `serve` process does with signals and with errors nobody caught (issue 17):
 *
 *   SIGTERM / SIGINT      graceful stop: no new connections, every session told `ended`, peers and egress closed,
 *                         logs flushed, exit 0; a stop that takes longer than `shutdownDeadlineMs` (5 s) exits 1
 *                         with what was still open; a second signal during the stop exits 1 at once
 *   SIGTERM with `drain`  (serve --drain-timeout, for load balancers) the drain first: no new sessions, running ones
 *                         play on until they end or the drain's own timeout passes; then the graceful stop above.
 *                         A second signal during the drain starts the graceful stop at once
 *   unhandledRejection    logged with its stack as an error (`event: unhandled_rejection`) and counted; the
 *                         process carries on: a promise nobody awaited failed, which says nothing about the state
 *                         of the sessions (each session's own failures are handled and reported inside it)
 *   uncaughtException     a socket error of a client that went away (ECONNRESET, EPIPE, ...) is logged and
 *                         survived: the socket is gone and nothing else is touched; anything else means code
 *                         stopped half-way through with unknown state: logged as fatal, then the same graceful
 *                         stop (sessions told `ended`), exit 1
 */
import type { Logger } from 'pino';
import { errorMessage } from '../util/error-message.ts';

/** Errors of one network peer's socket: the peer is gone, nothing of ours is left half-done. */
const PEER_SOCKET_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ETIMEDOUT', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_WRITE_AFTER_END']);

export const SHUTDOWN_DEADLINE_MS = 5000;

/** The part of `process` the policy uses (tests pass an EventEmitter and a recording exit). */
export interface PolicyProcess {
  on(event: string, listener: (...args: any[]) => void): unknown;
  off(event: string, listener: (...args: any[]) => void): unknown;
  exit(code: number): void;
}

export interface ProcessPolicyOptions {
  logger: Logger;
  /** Stops the server gracefully (XportraitServer.close). */
  stop(): Promise<void>;
  /** When set, the first SIGTERM drains (XportraitServer.drain, bounded by its own timeout) before the stop. */
  drain?(): Promise<void>;
  proc?: PolicyProcess;
  shutdownDeadlineMs?: number;
}

export interface ProcessPolicy {
  /** Errors survived so far, by kind (tests, logs). */
  readonly survived: { unhandledRejection: number; peerSocketError: number };
  /** Resolves with the exit code once a stop has begun and ended. */
  readonly stopped: Promise<number>;
  uninstall(): void;
}

export function installProcessPolicy(opts: ProcessPolicyOptions): ProcessPolicy {
  const proc = opts.proc ?? (process as unknown as PolicyProcess);
  const log = opts.logger;
  const deadlineMs = opts.shutdownDeadlineMs ?? SHUTDOWN_DEADLINE_MS;
  const survived = { unhandledRejection: 0, peerSocketError: 0 };
  let stopping = false;
  let resolveStopped: (code: number) => void = () => {};
  const stopped = new Promise<number>((r) => (resolveStopped = r));

  const exit = (code: number) => {
    log.flush?.();
    resolveStopped(code);
    proc.exit(code);
  };

  const stop = (why: Record<string, unknown>, code: number) => {
    if (stopping) {
      log.warn({ event: 'forced_exit', ...why }, 'second stop request during shutdown: exiting now');
      exit(1);
      return;
    }
    stopping = true;
    const t0 = performance.now();
    const timer = setTimeout(() => {
      log.error({ event: 'shutdown_timeout', ms: deadlineMs }, `graceful shutdown took more than ${deadlineMs} ms: exiting`);
      exit(1);
    }, deadlineMs);
    timer.unref?.();
    opts.stop().then(
      () => {
        clearTimeout(timer);
        log.info({ event: 'shutdown_complete', ms: Math.round(performance.now() - t0), exitCode: code }, 'shut down');
        exit(code);
      },
      (err: unknown) => {
        clearTimeout(timer);
        log.error({ event: 'shutdown_failed', err: errorMessage(err) }, 'graceful shutdown failed');
        exit(1);
      },
    );
  };

  let draining = false;
  const onSignal = (signal: string) => {
    if (signal === 'SIGTERM' && opts.drain && !draining && !stopping) {
      draining = true;
      log.info({ event: 'signal', signal, drain: true }, 'draining, then shutting down');
      opts.drain().then(
        () => {
          if (!stopping) stop({ signal, drained: true }, 0);
        },
        (err: unknown) => {
          log.error({ event: 'drain_failed', err: errorMessage(err) }, 'drain failed: shutting down');
          if (!stopping) stop({ signal, drained: false }, 1);
        },
      );
      return;
    }
    log.info({ event: 'signal', signal, drain: false }, 'shutting down');
    stop({ signal }, 0);
  };
  const onRejection = (reason: unknown) => {
    survived.unhandledRejection++;
    const err = reason instanceof Error ? reason : new Error(String(reason));
    log.error({ event: 'unhandled_rejection', err, survived: survived.unhandledRejection }, `a promise failed and nobody handled it: ${errorMessage(reason)}`);
  };
  const onException = (err: unknown, origin?: string) => {
    const code = (err as { code?: unknown })?.code;
    if (typeof code === 'string' && PEER_SOCKET_ERRORS.has(code)) {
      survived.peerSocketError++;
      log.warn({ event: 'peer_socket_error', code, err: errorMessage(err) }, 'a client socket failed after its peer went away; carrying on');
      return;
    }
    log.fatal({ event: 'uncaught_exception', origin, err }, `uncaught exception, state unknown: shutting down (${errorMessage(err)})`);
    stop({ uncaught: errorMessage(err) }, 1);
  };
  const sigterm = () => onSignal('SIGTERM');
  const sigint = () => onSignal('SIGINT');
  proc.on('SIGTERM', sigterm);
  proc.on('SIGINT', sigint);
  proc.on('unhandledRejection', onRejection);
  proc.on('uncaughtException', onException);
  return {
    survived,
    stopped,
    uninstall() {
      proc.off('SIGTERM', sigterm);
      proc.off('SIGINT', sigint);
      proc.off('unhandledRejection', onRejection);
      proc.off('uncaughtException', onException);
    },
  };
}
