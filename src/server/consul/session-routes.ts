import { InvalidArgumentError } from '../../core/errors.js';
import { decodeSegment, type ApiContext, type Req, type Route } from './context.js';
import { SESSIONS_ROOT } from './hub.js';
import { sessionNotFound } from './sessions.js';
import { parseBlocking, readJson, send } from './wire.js';

/** /v1/session over the session table (sessions.ts). */
export class SessionRoutes {
  constructor(private readonly c: ApiContext) {}

  register(ex: Route, pre: Route): void {
    ex('/v1/session/create', { PUT: (r) => this.sessionCreate(r) });
    ex('/v1/session/list', { GET: (r) => this.sessionList(r, undefined) });
    pre('/v1/session/destroy/', { PUT: (r, id) => this.sessionDestroy(r, id) });
    pre('/v1/session/renew/', { PUT: (r, id) => this.sessionRenew(r, id) });
    pre('/v1/session/info/', { GET: (r, id) => this.sessionInfo(r, id) });
    pre('/v1/session/node/', { GET: (r, node) => this.sessionList(r, node) });
  }


  async sessionCreate(r: Req): Promise<void> {
    await this.c.allow(r, 'session', this.c.node.name, 'write');
    const body = await readJson(r.req, this.c.maxBody, true);
    const guard = this.c.guard;
    guard?.beforeCreate(r.req);
    const id = await this.c.sessions.create(body, guard && ((lease) => guard.created(lease, r.req)));
    send(r.res, 200, JSON.stringify({ ID: id }), this.c.agentIndex());
  }

  sessionIdParam(raw: string): string {
    const id = decodeSegment(raw, 'session id');
    if (!/^[0-9a-fA-F-]{1,64}$/.test(id)) throw new InvalidArgumentError(`invalid session id ${JSON.stringify(id.slice(0, 40))}: expected a UUID`, { details: { field: 'session' } });
    return id;
  }

  async sessionDestroy(r: Req, raw: string): Promise<void> {
    const id = this.sessionIdParam(raw);
    await this.c.allow(r, 'session', id, 'write');
    const rec = this.c.sessions.record(id);
    if (rec) this.c.guard?.use(rec.lease, r.req, 'destroy');
    await this.c.sessions.destroy(id);
    send(r.res, 200, 'true', this.c.agentIndex());
  }

  async sessionRenew(r: Req, raw: string): Promise<void> {
    const id = this.sessionIdParam(raw);
    await this.c.allow(r, 'session', id, 'write');
    const rec = this.c.sessions.record(id);
    if (rec) this.c.guard?.use(rec.lease, r.req, 'renew');
    const s = this.c.sessions.renew(id);
    if (!s) throw sessionNotFound(id);
    send(r.res, 200, JSON.stringify([this.c.sessions.json(s)]), Math.max(this.c.hub.sessionsIndex(), s.kv.modRevision));
  }

  async sessionInfo(r: Req, raw: string): Promise<void> {
    const id = this.sessionIdParam(raw);
    await this.c.allow(r, 'session', id, 'read');
    const block = parseBlocking(r.q);
    const out = await this.c.block(r, block, ['sessions'], [], async () => {
      const found = this.c.sessions.record(id);
      const s = found && (!this.c.guard || this.c.guard.sees(found.lease, r.req)) ? found : undefined;
      return { index: Math.max(this.c.hub.sessionsIndex(), s?.kv.modRevision ?? 0), body: JSON.stringify(s ? [this.c.sessions.json(s)] : []) };
    });
    send(r.res, 200, out.body, out.index);
  }

  async sessionList(r: Req, rawNode: string | undefined): Promise<void> {
    const node = rawNode === undefined ? undefined : decodeSegment(rawNode, 'node name');
    await this.c.allow(r, 'session', '', 'read');
    const block = parseBlocking(r.q);
    const out = await this.c.block(r, block, ['sessions'], [], async () => {
      const { items } = await this.c.engine.list(SESSIONS_ROOT);
      let max = 0;
      for (const kv of items) if (kv.modRevision > max) max = kv.modRevision;
      const list = this.c.sessions.all().filter((s) => (node === undefined || s.node === node) && (!this.c.guard || this.c.guard.sees(s.lease, r.req)));
      return { index: Math.max(this.c.hub.sessionsIndex(), max), body: JSON.stringify(list.map((s) => this.c.sessions.json(s))) };
    });
    send(r.res, 200, out.body, out.index);
  }}
