import { RosterError } from '../../core/errors.js';
import { validateServiceName } from '../../core/names.js';
import { rosterLayout } from '../../registry/layout.js';
import { decodePath, parseQuery } from '../http.js';
import type { RouteModule } from '../context.js';

const layout = rosterLayout();

/** Services as the roster layout stores them: names with instance counts, one service's instances. */
export const serviceRoutes: RouteModule = (s) => [
  {
    path: '/api/v1/services',
    name: 'services',
    acl: 'token',
    methods: {
      GET: async (x) => {
        parseQuery(x.query, []);
        s.security.requireService(x.principal, undefined, 'read');
        const root = layout.root;
        const { revision, items } = await s.engine.list(root);
        // Decoded instances per service, as `roster ls` counts them: the service's parent key and
        // deeper keys are not instances; an entry that does not decode is counted as skipped.
        const counts = new Map<string, { instances: number; skipped: number }>();
        for (const kv of items) {
          const slash = kv.key.indexOf('/', root.length);
          if (slash <= root.length) continue;
          const name = kv.key.slice(root.length, slash);
          let inst;
          let bad = false;
          try {
            inst = layout.decode(name, kv);
          } catch {
            bad = true;
          }
          if (!inst && !bad) continue;
          const c = counts.get(name) ?? { instances: 0, skipped: 0 };
          if (bad) c.skipped++;
          else c.instances++;
          counts.set(name, c);
        }
        const services = [...counts].map(([name, c]) => ({ name, instances: c.instances, ...(c.skipped ? { skipped: c.skipped } : {}) }));
        x.json(200, { revision, services });
      },
    },
  },
  {
    path: '/api/v1/services/*',
    name: 'service',
    acl: 'token',
    methods: {
      GET: async (x) => {
        parseQuery(x.query, []);
        const name = validateServiceName(decodePath(x.param, 'service name'));
        s.security.requireService(x.principal, name, 'read');
        const { revision, items } = await s.engine.list(layout.servicePrefix(name));
        const instances = [];
        const invalid = [];
        for (const kv of items) {
          try {
            const inst = layout.decode(name, kv);
            if (inst) instances.push({ ...inst, modRevision: kv.modRevision, ...(kv.session ? { session: kv.session } : {}) });
          } catch (e) {
            invalid.push({ key: kv.key, error: e instanceof RosterError ? e.toJSON() : { code: 'INTERNAL', message: String(e) } });
          }
        }
        x.json(200, { revision, service: name, instances, invalid });
      },
    },
  },
];
