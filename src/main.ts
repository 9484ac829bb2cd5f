/**
 * Command line: `node dist/src/main.js [--config file.json]`.
 *
 * With no `--config` (and no NETTING_CONFIG) the engine runs on its
 * embedded demo configuration and prints it, demo tokens included, so a
 * fresh clone can be tried at once. SIGTERM and SIGINT stop it in order:
 * stop accepting, let committed work answer, close LMDB, exit.
 */

import { ConfigError, loadConfigFile, parseConfigWithWarnings, type CheckedConfig, type EngineConfig } from './config/config.js';
import { DEMO_CONFIG } from './config/demo.js';
import { setVerify } from './core/assert.js';
import { DataLockedError } from './engine/data-lock.js';
import { Engine } from './engine/engine.js';
import { createLogger, type Logger } from './engine/log.js';
import { ClusterNode } from './cluster/cluster-node.js';
import { LogBehindError } from './cluster/follower.js';
import { Gateway, ListenError } from './gateway/server.js';
import { LayoutError } from './store/engine-store.js';


function configPath(argv: readonly string[]): string | undefined {
  const i = argv.indexOf('--config');
  if (i >= 0) {
    const path = argv[i + 1];
    if (path === undefined) throw new ConfigError('--config', 'needs a file path');
    return path;
  }
  const eq = argv.find((a) => a.startsWith('--config='));
  if (eq !== undefined) return eq.slice('--config='.length);
  const env = process.env['NETTING_CONFIG'];
  return env !== undefined && env !== '' ? env : undefined;
}

function printDemo(config: EngineConfig): void {
  const lines = [
    '',
    'No --config given: running on the embedded DEMO configuration.',
    `  data folder: ${config.dataDir}    listen: http://${config.listen.host}:${config.listen.port}`,
    `  banks: ${config.banks.map((b) => b.code).join(' ')}`,
    '  DEMO tokens (for local trials only):',
    ...config.principals.map((p) => `    ${p.role.padEnd(11)} ${p.id.padEnd(8)} ${p.token}`),
    '',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function main(): Promise<void> {
  let checked: CheckedConfig;
  try {
    const path = configPath(process.argv.slice(2));
    if (path === undefined) {
      // NETTING_PORT moves the demo off 8080 when that port is taken (0 picks a free one).
      const port = process.env['NETTING_PORT'];
      checked = parseConfigWithWarnings(port === undefined || port === '' ? DEMO_CONFIG : { ...DEMO_CONFIG, listen: { host: '127.0.0.1', port: Number(port) } });
      printDemo(checked.config);
    } else {
      checked = loadConfigFile(path);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`netting-engine: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }

  const { config } = checked;
  const log = createLogger(config.logLevel);
  // What the configuration allows but should not be run with outside a trial; the warnings never show a token.
  for (const warning of checked.warnings) log.warn(warning);
  setVerify(config.verifyOnStart);
  if (config.cluster !== undefined) {
    await runClusterNode(config, log);
    return;
  }
  let engine: Engine;
  try {
    engine = await Engine.start(config, log);
  } catch (err) {
    if (err instanceof LayoutError || err instanceof DataLockedError) {
      log.error({ dataDir: config.dataDir, holder: err instanceof DataLockedError ? err.holder : undefined }, err.message);
      process.stderr.write(`netting-engine: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  let gateway: Gateway;
  try {
    gateway = await Gateway.listen(engine);
  } catch (err) {
    if (!(err instanceof ListenError)) throw err;
    // The port belongs to someone else: give the data folder back in order before refusing.
    log.error({ host: config.listen.host, port: config.listen.port }, err.message);
    process.stderr.write(`netting-engine: ${err.message}\n`);
    setTimeout(() => process.exit(2), config.limits.shutdownMs).unref();
    await engine.stop(config.limits.shutdownDrainMs).catch((stopErr: unknown) => log.error({ err: stopErr }, 'stop failed'));
    process.exit(2);
  }
  log.info({ tls: config.tls !== undefined, host: config.listen.host, port: gateway.port }, 'listening');
  stopOnSignals(config, log, async () => {
    gateway.stopListening();
    await engine.stop(config.limits.shutdownDrainMs);
    gateway.close();
  });
}

/**
 * SIGTERM and SIGINT stop the process in order with `stop`, then exit 0;
 * exit 1 when the stop fails or outlasts `limits.shutdownMs`.
 */
function stopOnSignals(config: EngineConfig, log: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping');
    setTimeout(() => {
      log.error('stop took too long; exiting');
      process.exit(1);
    }, config.limits.shutdownMs).unref();
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
}

/** Cluster mode: the node starts as a follower and leads once it holds the lease (src/cluster/cluster-node.ts). */
async function runClusterNode(config: EngineConfig, log: Logger): Promise<void> {
  let node: ClusterNode;
  try {
    node = await ClusterNode.start(config, log);
  } catch (err) {
    if (err instanceof LayoutError || err instanceof DataLockedError || err instanceof ListenError || err instanceof LogBehindError) {
      log.error({ dataDir: config.dataDir }, err.message);
      process.stderr.write(`netting-engine: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  log.info({ node: config.cluster!.node, host: config.listen.host, port: node.port }, 'listening');
  stopOnSignals(config, log, () => node.stop(config.limits.shutdownDrainMs));
}

main().catch((err: unknown) => {
  process.stderr.write(`netting-engine: failed to start: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
