/**
 * The deployment files that cannot be run here (issue 19): the Kubernetes manifest is validated against the
 * Kubernetes API's own schemas (kubernetes-models, a devDependency: validators generated from the upstream OpenAPI
 * spec, nothing fetched at test time) and checked against the server it runs (every flag and environment variable is
 * one `serve` knows; probes on /readyz and /healthz; the GPU request); the systemd unit is parsed, checked the same way
 * and, where systemd is installed, passed through `systemd-analyze verify`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Service } from 'kubernetes-models/v1/Service';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { addServeCommand } from '../../src/cli/serve.ts';
import { addServeOutputOptions } from '../../src/cli/serve-outputs.ts';
import { parseServeConfig } from '../../src/config/serve-config.ts';
import { which } from '../helpers/netns.ts';

/**
 * Fields the schema does not know. The Kubernetes OpenAPI schemas allow unknown properties (so does `validate()`),
 * while the API server drops or, with strict field validation, refuses them: a typo such as `readinesProbe` would pass
 * silently. This walks an object along the model's type declarations (the package's .d.ts files, generated from the
 * same spec) and lists every key that is not declared there.
 */
function unknownFields(value: unknown, dts: string, path = ''): string[] {
  if (Array.isArray(value)) return value.flatMap((v, i) => unknownFields(v, dts, `${path}[${i}]`));
  if (value === null || typeof value !== 'object') return [];
  const text = readFileSync(dts, 'utf8');
  const imports = new Map<string, string>();
  for (const m of text.matchAll(/^import \{ (\w+) \} from "(\.{1,2}\/[^"]+)\.js";$/gm)) imports.set(m[1], new URL(`${m[2]}.d.ts`, `file://${dts}`).pathname);
  const body = /export interface I\w+ (?:extends [\w, ]+ )?\{\n([\s\S]*?)\n\}/.exec(text)?.[1] ?? '';
  const declared = new Map<string, string>();
  // one property per line; a map (`{ [key: string]: … }`) spans several and is not walked into
  for (const m of body.matchAll(/^ {4}"([^"]+)"\??: (.*?);?$/gm)) declared.set(m[1], m[2]);
  if (/extends TypeMeta/.test(text)) for (const k of ['apiVersion', 'kind']) declared.set(k, 'string');
  const out: string[] = [];
  for (const [key, v] of Object.entries(value)) {
    const type = declared.get(key);
    if (type === undefined) {
      out.push(`${path}.${key}`);
      continue;
    }
    const ref = /^(?:Array<)?(I\w+)>?$/.exec(type)?.[1];
    const file = ref ? imports.get(ref) : undefined;
    if (file) out.push(...unknownFields(v, file, `${path}.${key}`));
  }
  return out;
}
const modelDts = (specifier: string) => fileURLToPath(import.meta.resolve(specifier)).replace(/\.js$/, '.d.ts');

const read = (p: string) => readFileSync(new URL(`../../deploy/${p}`, import.meta.url), 'utf8');

/** `serve`'s flags (long names) and environment variables, from the command itself. */
function serveOptions(): { flags: Map<string, string | undefined>; envs: Map<string, string> } {
  const program = new Command();
  addServeCommand(program);
  addServeOutputOptions(program);
  const serve = program.commands.find((c) => c.name() === 'serve')!;
  const flags = new Map<string, string | undefined>();
  const envs = new Map<string, string>();
  for (const o of serve.options) {
    if (o.long) flags.set(o.long, o.envVar);
    if (o.envVar && o.long) envs.set(o.envVar, o.long);
  }
  return { flags, envs };
}

/** Variables the manifests set for the process's C runtime, not for serve (glibc reads them at start). */
const PROCESS_ENV: Record<string, RegExp> = { MALLOC_ARENA_MAX: /^[1-9]\d*$/ };

/** The settings a list of `--flag=value` args and NAME=value environment variables amount to, as `serve` would parse them. */
function settingsOf(args: string[], env: Record<string, string>): Record<string, unknown> {
  const { flags, envs } = serveOptions();
  const camel = (flag: string) => flag.replace(/^--/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(env)) {
    if (PROCESS_ENV[name]) {
      if (!PROCESS_ENV[name].test(value)) throw new Error(`${name}=${value}: not a value glibc takes`);
      continue;
    }
    const flag = envs.get(name);
    if (!flag) throw new Error(`environment variable ${name} is not one serve reads`);
    out[camel(flag)] = value;
  }
  for (const a of args) {
    const m = /^(--[a-z-]+)=(.*)$/.exec(a);
    if (!m) throw new Error(`argument "${a}" is not --flag=value`);
    if (!flags.has(m[1])) throw new Error(`serve has no flag ${m[1]}`);
    const key = camel(m[1]);
    if (key === 'engineOpt') out.engineOpt = [...((out.engineOpt as string[]) ?? []), m[2]];
    else out[key] = m[2];
  }
  return out;
}

describe('deploy/kubernetes/xportrait-cam.yaml', () => {
  const docs = parseAllDocuments(read('kubernetes/xportrait-cam.yaml')).map((d) => {
    expect(d.errors).toEqual([]);
    return d.toJSON();
  });
  const deployment = docs.find((d) => d.kind === 'Deployment');
  const service = docs.find((d) => d.kind === 'Service');

  it('each object is valid against the Kubernetes API schema', () => {
    expect(docs.map((d) => d.kind)).toEqual(['Deployment', 'Service']);
    expect(() => new Deployment(deployment).validate()).not.toThrow();
    expect(() => new Service(service).validate()).not.toThrow();
    expect(unknownFields(deployment, modelDts('kubernetes-models/apps/v1/Deployment'))).toEqual([]);
    expect(unknownFields(service, modelDts('kubernetes-models/v1/Service'))).toEqual([]);
  });

  it('the validator does catch a broken manifest (so passing means something)', () => {
    const broken = structuredClone(deployment);
    broken.spec.template.spec.containers[0].ports[0].containerPort = 'eighty';
    expect(() => new Deployment(broken).validate()).toThrow(/containerPort/);
    const noSelector = structuredClone(deployment);
    delete noSelector.spec.selector;
    expect(() => new Deployment(noSelector).validate()).toThrow(/selector/);
    const badProbe = structuredClone(deployment);
    badProbe.spec.template.spec.containers[0].readinessProbe.periodSeconds = '2s';
    expect(() => new Deployment(badProbe).validate()).toThrow(/periodSeconds/);
    // a misspelt field passes the schema but not the field check
    const typo = structuredClone(deployment);
    const c = typo.spec.template.spec.containers[0];
    c.readinesProbe = c.readinessProbe;
    delete c.readinessProbe;
    c.livenessProbe.httpGet.paht = '/healthz';
    expect(() => new Deployment(typo).validate()).not.toThrow();
    expect(unknownFields(typo, modelDts('kubernetes-models/apps/v1/Deployment'))).toEqual([
      '.spec.template.spec.containers[0].livenessProbe.httpGet.paht',
      '.spec.template.spec.containers[0].readinesProbe',
    ]);
  });

  it('runs serve with settings it accepts, probes /readyz and /healthz on its port, requests a GPU', () => {
    const pod = deployment.spec.template.spec;
    const [c] = pod.containers;
    expect(c.command).toEqual(['node', 'bin/xportrait-cam.mjs', 'serve']);
    const env: Record<string, string> = {};
    for (const e of c.env) env[e.name] = e.value ?? 'k8s-secret-value-0123456789abcdef0123456789abcdef';
    const settings = settingsOf(c.args, env);
    const config = parseServeConfig(settings);
    expect(config.engine).toBe('xportrait');
    expect(config.iceTransportPolicy).toBe('relay');
    expect(config.turnUrls.length).toBeGreaterThan(0);
    expect(config.drainTimeout).toBeGreaterThan(0);
    expect(config.drainTimeout).toBeLessThan(pod.terminationGracePeriodSeconds);
    const port = c.ports.find((p: { name: string }) => p.name === 'http');
    expect(port.containerPort).toBe(config.port);
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http' });
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(c.resources.limits['nvidia.com/gpu']).toBeGreaterThanOrEqual(1);
    expect(c.resources.requests['nvidia.com/gpu']).toBe(c.resources.limits['nvidia.com/gpu']);
    // secrets come from a Secret, never inline
    for (const name of ['XPORTRAIT_SECRET', 'XPORTRAIT_TURN_SECRET']) expect(c.env.find((e: { name: string }) => e.name === name).valueFrom.secretKeyRef).toBeDefined();
    expect(c.volumeMounts[0].mountPath).toBe(settings.pack?.toString().split('/').slice(0, 2).join('/'));
    // the Service reaches the pods on the named port
    expect(service.spec.selector).toEqual(deployment.spec.template.metadata.labels);
    expect(deployment.spec.selector.matchLabels).toEqual(deployment.spec.template.metadata.labels);
    expect(service.spec.ports[0].targetPort).toBe('http');
  });
});

describe('deploy/systemd/xportrait-cam.service', () => {
  const unit = read('systemd/xportrait-cam.service');
  const sections = new Map<string, Map<string, string>>();
  let current: Map<string, string> | undefined;
  for (const line of unit.split('\n')) {
    if (/^\s*(#|$)/.test(line)) continue;
    const s = /^\[(\w+)\]$/.exec(line);
    if (s) sections.set(s[1], (current = new Map()));
    else {
      const kv = /^(\w+)=(.*)$/.exec(line);
      if (!kv || !current) throw new Error(`not a unit file line: ${line}`);
      current.set(kv[1], kv[2]);
    }
  }

  it('starts serve, stops it with SIGTERM, reads settings serve accepts from its environment file', () => {
    expect([...sections.keys()]).toEqual(['Unit', 'Service', 'Install']);
    const svc = sections.get('Service')!;
    expect(svc.get('ExecStart')).toMatch(/\/node \S+\/bin\/xportrait-cam\.mjs serve$/);
    expect(svc.get('KillSignal')).toBe('SIGTERM');
    expect(Number(svc.get('TimeoutStopSec'))).toBeGreaterThan(5);
    expect(svc.get('EnvironmentFile')).toBe('/etc/xportrait-cam.env');
    expect(sections.get('Install')!.get('WantedBy')).toBe('multi-user.target');
    const env: Record<string, string> = {};
    for (const line of read('systemd/xportrait-cam.env').split('\n')) {
      const m = /^([A-Z_]+)=(.*)$/.exec(line);
      if (m) env[m[1]] = m[2];
    }
    expect(Object.keys(env).length).toBeGreaterThan(5);
    const config = parseServeConfig(settingsOf([], env));
    expect(config.turnUrls.length).toBeGreaterThan(0);
    expect(config.port).toBe(8080);
    expect(config.drainTimeout).toBeGreaterThan(0);
    expect(config.drainTimeout).toBeLessThan(Number(svc.get('TimeoutStopSec')));
  });

  it.skipIf(!which('systemd-analyze'))('passes systemd-analyze verify', () => {
    const dir = mkdtempSync(join(tmpdir(), 'xp-unit-'));
    try {
      // the node binary where this machine has it; everything else as shipped
      const file = join(dir, 'xportrait-cam.service');
      writeFileSync(file, unit.replace(/^ExecStart=\S+/m, `ExecStart=${process.execPath}`));
      const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
      const complaints = (r.stderr + r.stdout).split('\n').filter((l) => l.includes('xportrait-cam.service'));
      expect(complaints).toEqual([]);
      expect(r.status).toBe(0);
      // and it does complain about a broken one
      writeFileSync(file, unit.replace('KillSignal=SIGTERM', 'KillSignal=SIGNOPE'));
      const bad = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
      expect(bad.stderr + bad.stdout).toMatch(/Failed to parse signal/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
