/**
 * Calling services found through the registry. Also published as the subpaths roster/http and
 * roster/grpc, so an application loads @grpc/grpc-js only when it uses the resolver.
 */
export * from './http.js';
export * from './grpc.js';
