/**
 * The admin console's public face: the command set and its two local transports, for
 * the composition root (`certplane serve`) and for `certplane admin`.
 */
export { ADMIN_COMMANDS, adminHelp, runAdminCommand, validateAdminArgs, type AdminCommand, type AdminDeps, type AdminRequest, type AdminResult, type OptionSpec } from './commands.js';
export { AdminWireRequest, MAX_REQUEST_BYTES, assertSocketDirectory, startAdminSocket, type AdminSocket, type AdminWireResponse } from './socket.js';
export { parseCommandWords, splitWords, startStdinConsole, type StdinConsole } from './console.js';
