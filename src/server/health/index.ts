/** The server's active health checker and roster's own checks API (src/server/health). */
export { HealthChecker, type HealthCheckerOptions, type CheckView, type CheckChange } from './checker.js';
export { checkRoutes } from './api.js';
