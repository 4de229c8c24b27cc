/**
 * The decoding rules of Go's github.com/hashicorp/consul/api (not installable here), checked on
 * roster's JSON: Go's encoding/json fails a whole response when a field has the wrong JSON type
 * (a string where a number is declared, an object where a string map is declared), and a `null`
 * list becomes a nil slice some callers index without checking. These checkers throw with the path
 * of the first violation.
 */

type Shape = 'string' | 'number' | 'bool' | 'stringMap' | 'stringList' | ((v: unknown, path: string) => void);

function fail(path: string, want: string, v: unknown): never {
  throw new Error(`${path}: Go's api expects ${want}, got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v} ${JSON.stringify(v)?.slice(0, 80)}`);
}

function check(v: unknown, shape: Shape, path: string): void {
  if (typeof shape === 'function') return shape(v, path);
  switch (shape) {
    case 'string':
      if (typeof v !== 'string') fail(path, 'a string', v);
      return;
    case 'number':
      if (typeof v !== 'number' || !Number.isInteger(v)) fail(path, 'an integer', v);
      return;
    case 'bool':
      if (typeof v !== 'boolean') fail(path, 'a bool', v);
      return;
    case 'stringMap':
      if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(path, 'a map[string]string (an object)', v);
      for (const [k, x] of Object.entries(v as object)) if (typeof x !== 'string') fail(`${path}.${k}`, 'a string', x);
      return;
    case 'stringList':
      if (!Array.isArray(v)) fail(path, 'a []string (never null)', v);
      (v as unknown[]).forEach((x, i) => typeof x !== 'string' && fail(`${path}[${i}]`, 'a string', x));
      return;
  }
}

function struct(fields: Record<string, Shape>, optional: readonly string[] = []) {
  return (v: unknown, path: string) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(path, 'an object', v);
    const o = v as Record<string, unknown>;
    for (const [k, shape] of Object.entries(fields)) {
      if (!(k in o)) {
        if (optional.includes(k)) continue;
        fail(`${path}.${k}`, 'the field to be present', undefined);
      }
      check(o[k], shape, `${path}.${k}`);
    }
  };
}

function listOf(shape: Shape) {
  return (v: unknown, path: string) => {
    if (!Array.isArray(v)) fail(path, 'a list (never null)', v);
    (v as unknown[]).forEach((x, i) => check(x, shape, `${path}[${i}]`));
  };
}

function mapOf(shape: Shape) {
  return (v: unknown, path: string) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(path, 'a map (an object)', v);
    for (const [k, x] of Object.entries(v as object)) check(x, shape, `${path}.${k}`);
  };
}

const serviceAddress = struct({ Address: 'string', Port: 'number' });
const weights = struct({ Passing: 'number', Warning: 'number' });

export const goNode = struct({ ID: 'string', Node: 'string', Address: 'string', Datacenter: 'string', TaggedAddresses: 'stringMap', Meta: 'stringMap', CreateIndex: 'number', ModifyIndex: 'number' });

export const goAgentService = struct(
  {
    ID: 'string', Service: 'string', Tags: 'stringList', Meta: 'stringMap', Port: 'number', Address: 'string',
    TaggedAddresses: mapOf(serviceAddress), Weights: weights, EnableTagOverride: 'bool', CreateIndex: 'number', ModifyIndex: 'number',
  },
);

export const goHealthCheck = struct({
  Node: 'string', CheckID: 'string', Name: 'string', Status: 'string', Notes: 'string', Output: 'string', ServiceID: 'string',
  ServiceName: 'string', ServiceTags: 'stringList', Type: 'string', Definition: mapOf(() => undefined), CreateIndex: 'number', ModifyIndex: 'number',
});

export const goServiceEntry = struct({ Node: goNode, Service: goAgentService, Checks: listOf(goHealthCheck) });

export const goCatalogService = struct({
  ID: 'string', Node: 'string', Address: 'string', Datacenter: 'string', TaggedAddresses: 'stringMap', NodeMeta: 'stringMap',
  ServiceID: 'string', ServiceName: 'string', ServiceAddress: 'string', ServiceTaggedAddresses: mapOf(serviceAddress), ServiceTags: 'stringList',
  ServiceMeta: 'stringMap', ServicePort: 'number', ServiceWeights: weights, ServiceEnableTagOverride: 'bool', CreateIndex: 'number', ModifyIndex: 'number',
});

/** catalog.Services(): map[string][]string. */
export const goCatalogServices = mapOf('stringList');

/** agent.Self(): map[string]map[string]interface{}: every top-level value an object. */
export const goAgentSelf = mapOf((v, path) => {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(path, 'an object (map[string]interface{})', v);
});

export const goKVPair = struct({ Key: 'string', CreateIndex: 'number', ModifyIndex: 'number', LockIndex: 'number', Flags: 'number' });

export const goSessionEntry = struct({ ID: 'string', Name: 'string', Node: 'string', LockDelay: 'number', Behavior: 'string', TTL: 'string', NodeChecks: 'stringList', CreateIndex: 'number', ModifyIndex: 'number' });

export function goDecode(v: unknown, shape: (v: unknown, path: string) => void, what: string): void {
  shape(v, what);
}

export const goList = listOf;
