/**
 * roster's DNS interface (SRV and A / AAAA for healthy instances): `startDnsServer`. Mounted by
 * `startServer({ dns: {...} })`; usable on its own over any backend.
 */
export { startDnsServer, DEFAULT_DNS_PORT, type DnsServer, type DnsServerOptions, type DnsStats } from './server.js';
export { DnsAnswerer, addrLabel, type AnswerConfig, type Resolution, type Rcode } from './answer.js';
