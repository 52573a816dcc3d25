/**
 * Every error code certplane can emit, in one table: its kind and a line saying what it
 * means. The API's HTTP status, the command line's exit code, the agent channel's close code
 * and docs/reference/errors.md are all derived from this table, so they cannot disagree,
 * and test/errors/catalogue.test.ts fails when a code is emitted but not listed here, or
 * listed here but emitted nowhere. Like errors.ts, this module imports nothing, so every
 * room (the pure chain engine included) may use its constants.
 *
 * To add a code: one entry in CATALOGUE below, `NEW_CODE: { kind, meaning }` (plus `status`
 * only when the kind's status is not the right one), then throw
 * `new CertplaneError(ErrorCode.NEW_CODE, ...)` and run `npm run docs` to regenerate the page.
 */

/**
 * What went wrong, from the caller's side: it decides the HTTP status and the exit code.
 * `refused` is well-formed input that certplane's checks turn down (a chain that does not
 * verify, a CSR the instance may not have): not a typing mistake, so not exit 2.
 */
export type ErrorKind = 'bad-input' | 'refused' | 'authentication' | 'forbidden' | 'not-found' | 'conflict' | 'rate-limited' | 'upstream' | 'unavailable' | 'internal';

/** What each kind means to a reader of the error reference, in the order it lists them. */
export const KIND_MEANINGS: Readonly<Record<ErrorKind, string>> = {
  'bad-input': 'what the caller gave is malformed or out of bounds; correct it and ask again',
  refused: 'well-formed, but certplane\'s checks turn it down (a chain that does not verify, a CSR the instance may not have)',
  authentication: 'the caller (a client, an agent, or the plane as seen by an agent) could not be authenticated',
  forbidden: 'authenticated, or local, but not allowed: a role, a cluster, or file permissions others could abuse',
  'not-found': 'the thing named does not exist',
  conflict: 'the current state does not allow it (a name already taken, a socket in use, a transition the lifecycle refuses)',
  'rate-limited': 'too many, too soon; ask again later (`details.retryAt` when known)',
  upstream: 'a service certplane relies on (the ACME CA, AWS, a DNS provider, the plane as seen by its clients) refused or failed',
  unavailable: 'something needed cannot be reached now (the database, the CA, an agent); the same request may work later',
  internal: 'certplane\'s own state or code is at fault; the log has the detail',
};

/** The HTTP status each kind is answered with; an entry's `status` overrides it where HTTP has a more precise one. */
export const STATUS_BY_KIND: Readonly<Record<ErrorKind, number>> = {
  'bad-input': 400,
  refused: 422,
  authentication: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  'rate-limited': 429,
  upstream: 502,
  unavailable: 503,
  internal: 500,
};

/** Exit codes of `certplane` for a failure: 2 when the command line or its input was wrong, 1 for everything else. */
export const FailureExitCode = { BAD_INPUT: 2, FAILED: 1 } as const;

/** WebSocket close codes of the agent channel that an error decides (4000-4999 are for applications). */
export const ChannelCloseCode = { PROTOCOL_ERROR: 4000, AUTH_FAILED: 4001 } as const;

export interface CatalogueEntry {
  readonly kind: ErrorKind;
  /** One line: what happened, for the reader of the error reference. */
  readonly meaning: string;
  /** Only where HTTP has a more precise status than the kind's (413, 414, 415). */
  readonly status?: number;
  /** Only for codes that close the agent channel with something other than PROTOCOL_ERROR. */
  readonly channelClose?: (typeof ChannelCloseCode)[keyof typeof ChannelCloseCode];
}

/** One entry per code, grouped by the room that emits it. */
const CATALOGUE = {
  // The API's requests
  VALIDATION_FAILED: { kind: 'bad-input', meaning: 'a request body, query string, path id or command argument breaks its schema; `details.problems` lists each problem' },
  REQUEST_BODY_INVALID_JSON: { kind: 'bad-input', meaning: 'the request body is not JSON (or is empty where JSON is required); refused before any route ran' },
  REQUEST_BODY_TOO_LARGE: { kind: 'bad-input', status: 413, meaning: 'the request body is larger than the API accepts' },
  REQUEST_MEDIA_TYPE_UNSUPPORTED: { kind: 'bad-input', status: 415, meaning: 'the request\'s Content-Type is not one the route reads' },
  REQUEST_URL_INVALID: { kind: 'bad-input', meaning: 'the URL is malformed (a bad percent-escape)' },
  REQUEST_URL_PARAMETER_TOO_LONG: { kind: 'bad-input', status: 414, meaning: 'a path parameter is longer than 100 characters' },
  REQUEST_INVALID: { kind: 'bad-input', meaning: 'any other refusal by the HTTP framework before a route ran; the status is the framework\'s and `details.cause` names its reason' },
  NOT_FOUND: { kind: 'not-found', meaning: 'no such route, instance, certificate or campaign' },
  NOT_READY: { kind: 'unavailable', meaning: '`/readyz`: this process cannot reach its database' },
  INTERNAL: { kind: 'internal', meaning: 'an unexpected failure; the API answers with a generic message and the plane\'s log has the detail' },
  PRIVATE_KEY_REFUSED: { kind: 'bad-input', meaning: 'an API request or admin command holds a PEM private key; nothing of it is kept' },

  // Authentication of API clients (secure mode)
  AUTH_CLIENT_CERTIFICATE_REQUIRED: { kind: 'authentication', meaning: 'the request came without a TLS client certificate' },
  AUTH_UNKNOWN_CLIENT: { kind: 'authentication', meaning: 'the client certificate is not registered (`certplane admin register-client`)' },
  AUTH_CLIENT_CERTIFICATE_EXPIRED: { kind: 'authentication', meaning: 'the registered client certificate is not valid now' },
  AUTH_CLIENT_REVOKED: { kind: 'authentication', meaning: 'the client was revoked' },
  AUTH_FORBIDDEN: { kind: 'forbidden', meaning: 'the client\'s role or clusters do not allow this request' },

  // Agent enrollment and the agent CA
  ENROLLMENT_TOKEN_INVALID: { kind: 'authentication', meaning: 'the enrollment token is unknown, already used or expired' },
  ENROLLMENT_RATE_LIMITED: { kind: 'rate-limited', meaning: 'too many failed enrollments from this address; wait a few seconds' },
  ENROLLMENT_KEY_UNSUPPORTED: { kind: 'bad-input', meaning: 'an agent identity key is not ECDSA P-256' },
  AGENT_CA_CORRUPT: { kind: 'internal', meaning: 'the agent CA secret does not hold a key and certificate' },
  AGENT_CERT_UNKNOWN_ISSUER: { kind: 'authentication', meaning: 'an agent certificate was not issued by this plane\'s agent CA' },
  AGENT_CERT_EXPIRED: { kind: 'authentication', meaning: 'an agent certificate is not valid now; enroll the agent again' },

  // The agent channel, as the plane closes or answers it
  CHANNEL_MESSAGE_TOO_LARGE: { kind: 'bad-input', meaning: 'a channel message is larger than 256 KiB' },
  CHANNEL_MESSAGE_NOT_JSON: { kind: 'bad-input', meaning: 'a channel message is not JSON' },
  CHANNEL_MESSAGE_INVALID: { kind: 'bad-input', meaning: 'a channel message breaks the protocol\'s schema (or is a binary frame)' },
  CHANNEL_PRIVATE_KEY_REFUSED: { kind: 'bad-input', meaning: 'a channel message holds a PEM private-key block; private keys never travel on the channel' },
  CHANNEL_VERSION_UNSUPPORTED: { kind: 'bad-input', meaning: 'the peer speaks another protocol version' },
  CHANNEL_MESSAGE_UNEXPECTED: { kind: 'bad-input', meaning: 'a message out of turn (anything before `auth`, or `auth` twice)' },
  CHANNEL_INTERNAL: { kind: 'internal', meaning: 'the plane failed handling a channel message; the connection is closed and the agent reconnects' },
  AGENT_AUTH_FAILED: { kind: 'authentication', channelClose: 4001, meaning: 'the agent did not prove its identity in time, or its certificate or signature does not verify' },
  AGENT_REVOKED: { kind: 'authentication', channelClose: 4001, meaning: 'the agent certificate was revoked or superseded by its renewal; a live session is cut with close 4003; enroll again' },
  AGENT_RENEWAL_TOO_EARLY: { kind: 'rate-limited', meaning: 'an agent certificate renewal asked before two thirds of its lifetime (`identity_renewal_refused`, connection kept)' },
  AGENT_RENEWAL_RATE_LIMITED: { kind: 'rate-limited', meaning: 'an agent certificate renewal asked again too soon (`identity_renewal_refused`, connection kept)' },
  AGENT_OFFLINE: { kind: 'unavailable', meaning: 'the instance\'s agent is not connected, or disconnected before it answered' },
  AGENT_TIMEOUT: { kind: 'unavailable', meaning: 'the agent did not answer a request in time' },
  AGENT_REQUEST_REFUSED: { kind: 'upstream', meaning: 'the agent answered a request of the plane (http-01, a revocation signature) with an error; its own code is in `details.agentCode`' },
  AGENT_INSTALL_FAILED: { kind: 'internal', meaning: 'the agent refused or failed to install a delivery; `agentCode` keeps the agent\'s own code' },
  CHANNEL_SERVED_REPORT_TOO_FREQUENT: { kind: 'rate-limited', meaning: 'an agent sent served-chain reports faster than the plane judges them; the extra report is ignored and the connection kept' },

  // Served-chain checks: findings about what an instance's service really serves (`served.problems`)
  SERVED_STALE: { kind: 'refused', meaning: 'the service serves another certificate than the one installed (its reload did nothing, or another store serves)' },
  SERVED_CHAIN_UNVERIFIED: { kind: 'refused', meaning: 'the service serves the installed certificate on a chain that does not verify in one of the instance\'s trust profiles' },
  SERVED_UNREACHABLE: { kind: 'unavailable', meaning: 'the agent could not complete a TLS handshake with its `--probe` target' },

  // Issuance for an instance
  INSTANCE_HOSTNAME_TAKEN: { kind: 'conflict', meaning: 'another instance holds one of the names (or a wildcard covering it, or a name the wildcard covers)' },
  INSTANCE_IP_ADDRESS_PROFILE_REQUIRED: { kind: 'bad-input', meaning: 'an IP address among an instance\'s names while its profile does not issue for addresses (only `shortlived` does); set the profile or list DNS names only' },
  INSTANCE_UNKNOWN_TRUST_PROFILE: { kind: 'bad-input', meaning: 'an instance names a trust profile that is not configured (`details.unknown`, `details.configured`)' },
  INSTANCE_DECOMMISSIONED: { kind: 'conflict', meaning: 'the instance is decommissioned: no issuance, enrollment token or second decommission; a job started for it fails as `InstanceDecommissioned`' },
  CERTIFICATE_NOT_REVOCABLE: { kind: 'conflict', meaning: 'a revocation of a certificate the CA never issued; a request under way is stopped by decommissioning its instance' },
  CERTIFICATE_ALREADY_REVOKED: { kind: 'conflict', meaning: 'a revocation of a certificate revoked already (its `revocation` record says by whom and why)' },
  ISSUANCE_UNKNOWN_INSTANCE: { kind: 'not-found', meaning: 'no such instance' },
  ISSUANCE_UNKNOWN_CERTIFICATE: { kind: 'forbidden', meaning: 'an agent named a certificate that is not its instance\'s; the channel is closed' },
  ISSUANCE_CSR_REJECTED: { kind: 'refused', meaning: 'an agent\'s CSR names a host the instance does not own, no name, a key against the instance\'s policy, does not verify, or breaks a `CSR_*` limit (its code follows `CSR rejected:`)' },
  ISSUANCE_STOPPED: { kind: 'unavailable', meaning: 'in the log only: an order stopped before it settled (`details.cause`: `shutdown` or `lease_lost`); never a failure, the next holder of the lease resumes the order' },
  ISSUANCE_REVOKED_BEFORE_INSTALL: { kind: 'conflict', meaning: 'failure of a job whose certificate was revoked before its agent installed it (reason `Internal`, retried: the job orders a new certificate with a new key)' },
  ISSUANCE_INSTANCE_CHANGED: { kind: 'conflict', meaning: 'failure code of a certificate under way when its instance\'s names or key algorithm changed (reason `InstanceChanged`); a certificate for the new ones replaces it' },
  LIFECYCLE_TRANSITION_REFUSED: { kind: 'conflict', meaning: 'an event the certificate\'s state does not allow (a bug, or a peer acknowledging what was never delivered)' },

  // Reissue campaigns and the rate limiter
  REISSUE_KEY_REUSE_UNSUPPORTED: { kind: 'bad-input', meaning: '`rotateKey=false`: every certificate gets a fresh key made on the instance' },
  REISSUE_NOTHING_MATCHED: { kind: 'bad-input', meaning: 'the selector matches no instance; nothing to reissue' },
  REISSUE_RECHAIN_KEEPS_KEY: { kind: 'bad-input', meaning: '`mode: rechain` with `rotateKey: true`: a rechain delivers the same certificate on another chain, so its key stays; use `rechain-or-reissue` or `reissue` for new keys' },
  RECHAIN_NO_SATISFYING_CHAIN: { kind: 'refused', meaning: 'no stored chain of the installed certificate satisfies the preferences and every trust profile of the instance now; only a new order (a reissue) helps' },
  RECHAIN_NO_INSTALLED_CERTIFICATE: { kind: 'refused', meaning: 'the instance has no installed certificate to re-chain' },
  RECHAIN_ISSUANCE_UNDER_WAY: { kind: 'conflict', meaning: 'a certificate is being issued or delivered for the instance; its chain is chosen under the trust in force, so there is nothing to re-chain' },
  RATE_LIMIT_CONFIG_INVALID: { kind: 'bad-input', meaning: '`CERTPLANE_RATE_LIMITS` is not valid JSON of rate-limit buckets' },
  RATE_LIMIT_INVALID_REQUEST: { kind: 'bad-input', meaning: 'the rate limiter was asked about something it cannot count (no hostname, not a hostname, a bad date or count)' },

  // Chains and CSRs given to certplane
  CHAIN_EMPTY: { kind: 'bad-input', meaning: 'the input holds no certificate at all' },
  CHAIN_GARBAGE: { kind: 'bad-input', meaning: 'text that is not a PEM certificate block (or DER that does not parse)' },
  CHAIN_UNPARSABLE_CERTIFICATE: { kind: 'bad-input', meaning: 'a PEM CERTIFICATE block whose contents are not an X.509 certificate' },
  CHAIN_PRIVATE_KEY_IN_BUNDLE: { kind: 'bad-input', meaning: 'a private key inside a bundle that should carry only public material' },
  KEY_INVALID: { kind: 'bad-input', meaning: 'the key file (`--key`) is neither a CSR nor a public key' },
  CSR_INVALID: { kind: 'bad-input', meaning: 'the CSR does not parse, its public key is not in its one DER encoding, its subject has more than one CN or one longer than 64 bytes, or it asks for no usable name' },
  CSR_BAD_SIGNATURE: { kind: 'bad-input', meaning: 'the CSR\'s self-signature does not verify' },
  CSR_WEAK_SIGNATURE: { kind: 'bad-input', meaning: 'the CSR is signed with SHA-1, MD5 or an algorithm certplane does not know' },
  CSR_TOO_MANY_NAMES: { kind: 'bad-input', meaning: 'the CSR carries more names than a certificate may (duplicates count)' },
  CSR_TOO_LARGE: { kind: 'bad-input', status: 413, meaning: 'the CSR is larger than its allowance' },

  // Chain verification and selection: findings in reports, refusals when a chain is needed
  CHAIN_NO_LEAF: { kind: 'refused', meaning: 'no end-entity certificate could be identified in the bundle' },
  CHAIN_MISSING_INTERMEDIATE: { kind: 'refused', meaning: 'no issuer for some certificate of the path: an intermediate is missing' },
  CHAIN_UNTRUSTED_ROOT: { kind: 'refused', meaning: 'the path ends at a self-signed root that is not in the trust store' },
  CHAIN_BAD_SIGNATURE: { kind: 'refused', meaning: 'a certificate\'s issuer has the right name but did not sign it' },
  CHAIN_PATH_TOO_LONG: { kind: 'refused', meaning: 'the path would need more certificates than any real chain has' },
  CHAIN_EXPIRED: { kind: 'refused', meaning: 'a certificate of the path (or a client certificate being registered) is past its notAfter' },
  CHAIN_NOT_YET_VALID: { kind: 'refused', meaning: 'a certificate of the path is before its notBefore at the evaluation time' },
  CHAIN_NOT_A_CA: { kind: 'refused', meaning: 'an issuing certificate is not a CA (basic constraints)' },
  CHAIN_PATH_LENGTH_EXCEEDED: { kind: 'refused', meaning: 'a CA\'s path length constraint is exceeded by the intermediates below it' },
  CHAIN_KEY_USAGE: { kind: 'refused', meaning: 'key usage forbids what the certificate is used for (certificate signing, TLS)' },
  CHAIN_LEAF_EKU: { kind: 'refused', meaning: 'the leaf lacks the serverAuth extended key usage' },
  CHAIN_EKU_EXCLUDES_SERVER_AUTH: { kind: 'refused', meaning: 'a CA certificate\'s extended key usage excludes serverAuth (the May 2026 Generation Y cross-sign fault)' },
  CHAIN_HOSTNAME_MISMATCH: { kind: 'refused', meaning: 'a requested hostname is not covered by the leaf\'s subject alternative names' },
  CHAIN_KEY_MISMATCH: { kind: 'refused', meaning: 'the leaf certifies another key than the CSR\'s' },
  CHAIN_DISTRUSTED: { kind: 'refused', meaning: 'the path runs through a root or CA whose key is on the distrust list' },
  CHAIN_NO_PREFERRED_CHAIN: { kind: 'refused', meaning: 'no offered chain satisfies any preferred root; nothing is issued or delivered' },
  CHAIN_PROFILE_UNSATISFIED: { kind: 'refused', meaning: 'no offered chain verifies in every trust profile of the instance (`details.profiles` names the failing ones); failure reason `ChainUnsatisfied` (permanent)' },
  CHAIN_UNKNOWN_TRUST_PROFILE: { kind: 'refused', meaning: 'the instance lists a trust profile the plane does not configure (any more); failure reason `ChainUnsatisfied` (permanent)' },
  SELECT_TOP_ISSUER_MISMATCH: { kind: 'refused', meaning: 'selection passed over a chain whose topmost certificate is issued by another root than the preference' },
  SELECT_ROOT_NOT_IN_TRUST_STORE: { kind: 'refused', meaning: 'selection passed over a preference: the trust store has no root of that name' },
  SELECT_PROFILE_UNSATISFIED: { kind: 'refused', meaning: 'selection passed over a chain that does not verify in one of the trust profiles its instance\'s clients use' },

  // The ACME CA
  ACME_NO_SOLVER: { kind: 'upstream', meaning: 'no configured solver can answer any challenge the CA offered for a name' },
  ACME_ORDER_FAILED: { kind: 'upstream', meaning: 'the CA refused or failed the order; the message carries its detail' },
  ACME_BAD_CHAIN: { kind: 'upstream', meaning: 'the CA returned something that is not a certificate chain' },
  ACME_UNKNOWN_PROFILE: { kind: 'upstream', meaning: 'the profile asked for is not one the CA\'s directory offers; nothing was ordered' },
  ACME_DIRECTORY_UNREADABLE: { kind: 'upstream', meaning: 'the CA\'s directory could not be read or is not the RFC 8555 shape' },
  ACME_UNREACHABLE: { kind: 'unavailable', meaning: 'no HTTP answer from the CA at all (refused, timed out, TLS failure), after retries' },
  ACME_ACCOUNT_CORRUPT: { kind: 'internal', meaning: 'the ACME account secret does not hold an account; fix or delete it' },
  ACME_RATE_LIMITED: { kind: 'rate-limited', meaning: 'the CA\'s rateLimited problem; `details.retryAt` from its Retry-After' },
  ACME_BAD_NONCE: { kind: 'upstream', meaning: 'the CA\'s badNonce problem, after the ACME client\'s own retries' },
  ACME_REJECTED_IDENTIFIER: { kind: 'upstream', meaning: 'the CA will not issue for a name (rejectedIdentifier, unsupportedIdentifier, caa); `details.names`' },
  ACME_ALREADY_REPLACED: { kind: 'upstream', meaning: 'the certificate named in `replaces` already has a replacement (RFC 9773)' },
  ACME_ALREADY_REVOKED: { kind: 'upstream', meaning: 'the CA says the certificate to revoke is revoked already; it is recorded as revoked (`alreadyRevokedAtCa`)' },
  ACME_BAD_REVOCATION_REASON: { kind: 'bad-input', meaning: 'the CA does not accept that revocation reason from that signer (badRevocationReason)' },
  ACME_VALIDATION_FAILED: { kind: 'upstream', meaning: 'a challenge was not validated (unauthorized, connection, dns, incorrectResponse, tls); `details.names`' },
  ACME_BAD_CSR: { kind: 'upstream', meaning: 'the CA refuses the CSR itself (badCSR, badPublicKey, badSignatureAlgorithm)' },
  ACME_ACCOUNT_REFUSED: { kind: 'upstream', meaning: 'the account may not do this (unauthorized, userActionRequired, externalAccountRequired)' },
  ACME_SERVER_INTERNAL: { kind: 'upstream', meaning: 'the CA failed (serverInternal, or a 5xx without a problem document)' },
  ACME_PROBLEM: { kind: 'upstream', meaning: 'any other problem type from the CA; `details.problemType` keeps it' },
  ARI_NO_AKI: { kind: 'bad-input', meaning: 'the certificate has no Authority Key Identifier, so no ARI identifier; the lifetime rule applies' },
  ARI_INVALID: { kind: 'upstream', meaning: 'the CA\'s renewal information is not the RFC 9773 shape, or its window ends before it starts' },
  ARI_UNAVAILABLE: { kind: 'unavailable', meaning: 'the renewal information could not be fetched; the lifetime rule applies and ARI is asked again later' },

  // DNS providers
  DNS_CHALLTESTSRV: { kind: 'upstream', meaning: 'pebble-challtestsrv refused or failed a TXT record change' },
  DNS_ROUTE53: { kind: 'upstream', meaning: 'Route 53 refused or failed a TXT record change' },
  DNS_ROUTE53_NO_ZONE: { kind: 'not-found', meaning: 'no public hosted zone visible to the credentials contains the name; create one or set `CERTPLANE_ROUTE53_HOSTED_ZONE_ID`' },
  DNS_ROUTE53_TIMEOUT: { kind: 'unavailable', meaning: 'a Route 53 change did not reach INSYNC in time' },

  // Secrets
  SECRETS_INVALID_SPEC: { kind: 'bad-input', meaning: '`CERTPLANE_SECRETS` is not `file:PATH` or `aws-sm:PREFIX`' },
  SECRETS_INVALID_NAME: { kind: 'bad-input', meaning: 'a secret name that is not 1 to 128 letters, digits, `.`, `_` or `-`' },
  SECRETS_IO: { kind: 'internal', meaning: 'the `file:` secret store could not read or write a file' },
  SECRETS_FILE_PERMISSIONS: { kind: 'forbidden', meaning: 'a secret file, its directory or the TLS key may be read by group or others; certplane refuses to use it' },
  SECRETS_AWS: { kind: 'upstream', meaning: 'AWS Secrets Manager refused or failed; the message names the secret id, never a value' },
  SECRETS_AWS_CLIENT_MISSING: { kind: 'internal', meaning: '`aws-sm:` was configured but no Secrets Manager client was wired in' },
  SECRETS_CURSOR_KEY_CORRUPT: { kind: 'internal', meaning: 'the page-cursor key secret is not 32 bytes of base64; delete it (earlier cursors become invalid)' },

  // Storage
  STORE_INVALID_URL: { kind: 'bad-input', meaning: '`CERTPLANE_DATABASE_URL` is not a URL certplane understands' },
  STORE_INVALID_CURSOR: { kind: 'bad-input', meaning: 'a page cursor this service did not issue (to this caller)' },
  STORE_INVALID_VALUE: { kind: 'bad-input', meaning: 'a value the database cannot store (e.g. a NUL byte)' },
  STORE_NOT_FOUND: { kind: 'not-found', meaning: 'a record this one refers to does not exist (a foreign key)' },
  STORE_CONFLICT: { kind: 'conflict', meaning: 'a record with the same key already exists' },
  STORE_UNAVAILABLE: { kind: 'unavailable', meaning: 'the database cannot be reached, or the connection was lost' },
  STORE_CLOSED: { kind: 'unavailable', meaning: 'the store was already closed (the process is shutting down)' },
  STORE_QUERY_FAILED: { kind: 'internal', meaning: 'the database refused a statement, or did not return what it was asked for' },
  STORE_INVALID_WRITE: { kind: 'internal', meaning: 'a rate bucket update tried to write a bucket it had not locked' },
  STORE_MIGRATION_FAILED: { kind: 'internal', meaning: 'a schema migration failed; none of the pending ones was applied' },

  // Configuration and start-up of the plane
  CONFIG_INVALID: { kind: 'bad-input', meaning: 'one or more `CERTPLANE_*` variables are invalid; each problem names its variable' },
  TRUST_STORE_UNREADABLE: { kind: 'bad-input', meaning: 'a file named in the configuration (trust store, TLS certificate or key, ACME CA certificates) cannot be read' },
  TRUST_FILE_INVALID: { kind: 'bad-input', meaning: '`CERTPLANE_TRUST_FILE` is not the JSON it must be; a start stops, a reload keeps the settings in force' },
  TRUST_PREFERENCES_UNTRUSTED: { kind: 'bad-input', meaning: 'no trust profile holds any preferred root, so every issuance would be refused; a start stops, a reload keeps the settings in force' },
  TLS_RELOAD_FAILED: { kind: 'bad-input', meaning: 'the listener\'s replacement certificate or key is unusable; the current one is still served' },
  SERVER_LISTEN_FAILED: { kind: 'unavailable', meaning: 'the plane cannot listen on `CERTPLANE_LISTEN` (address in use, no permission)' },
  METRICS_LISTEN_FAILED: { kind: 'unavailable', meaning: 'the plane cannot listen on `CERTPLANE_METRICS_LISTEN` (address in use, not an address of this host, no permission); the start stops' },
  SHUTDOWN_INCOMPLETE: { kind: 'internal', meaning: 'some resources could not be closed at shutdown; the others were' },

  // The admin console and its socket
  ADMIN_UNKNOWN_COMMAND: { kind: 'bad-input', meaning: 'no such admin command (`certplane admin help` lists them)' },
  ADMIN_BAD_ARGUMENTS: { kind: 'bad-input', meaning: 'an admin command\'s options break its schema; each problem is named' },
  ADMIN_BAD_REQUEST: { kind: 'bad-input', meaning: 'a socket line that is not one JSON request object' },
  ADMIN_REQUEST_TOO_LARGE: { kind: 'bad-input', meaning: 'a socket request line is longer than the console reads' },
  ADMIN_NOT_FOUND: { kind: 'not-found', meaning: 'no client, instance or agent certificate with that id or thumbprint' },
  ADMIN_TLS_NOT_CONFIGURED: { kind: 'conflict', meaning: '`reload-tls` on a plane that serves plain HTTP' },
  ADMIN_TRUST_NOT_CONFIGURED: { kind: 'conflict', meaning: '`reload-trust` on a process that runs no trust profiles' },
  ADMIN_INTERNAL: { kind: 'internal', meaning: 'an admin command failed unexpectedly; the plane\'s log has the detail' },
  ADMIN_SOCKET_IN_USE: { kind: 'conflict', meaning: 'another process serves the admin socket path (another `certplane serve`?)' },
  ADMIN_SOCKET_PATH_OCCUPIED: { kind: 'conflict', meaning: 'something that is not a socket sits at the admin socket path; it is left alone' },
  ADMIN_SOCKET_PATH_TOO_LONG: { kind: 'bad-input', meaning: 'the admin socket path is longer than Unix sockets allow' },
  ADMIN_SOCKET_INSECURE: { kind: 'forbidden', meaning: 'the admin socket did not end up mode 0600 and owned by the service\'s user; the plane refuses to serve it' },
  ADMIN_SOCKET_DIRECTORY_INSECURE: { kind: 'forbidden', meaning: 'the admin socket\'s directory belongs to another user or others may write it' },
  ADMIN_SOCKET_UNTRUSTED: { kind: 'forbidden', meaning: '`certplane admin`: what sits at the path is not a socket of root or of the caller, so it may not be the plane\'s' },

  // The `certplane` command
  CLI_USAGE: { kind: 'bad-input', meaning: 'the command line is wrong; the message shows the usage' },
  CLI_SERVER_UNREACHABLE: { kind: 'unavailable', meaning: '`reissue`/`status` cannot reach the plane (or does not trust its certificate)' },
  CLI_SERVER_ERROR: { kind: 'upstream', meaning: 'the plane answered an HTTP error without a certplane code' },
  CLI_ADMIN_UNREACHABLE: { kind: 'unavailable', meaning: 'nothing answers on the admin socket (no plane, no permission, no file)' },
  CLI_ADMIN_NO_ANSWER: { kind: 'unavailable', meaning: 'the admin socket accepted the request but gave no answer in time' },
  CLI_ADMIN_BAD_ANSWER: { kind: 'upstream', meaning: 'the admin socket answered something that is not an admin console response' },
  DEMO_FAILED: { kind: 'internal', meaning: '`certplane demo`: the certificate failed; the message carries its last error' },
  DEMO_TIMEOUT: { kind: 'unavailable', meaning: '`certplane demo`: a step did not finish in time' },
  DEVENV_PEBBLE_OPTIONS: { kind: 'bad-input', meaning: 'the local Pebble cannot start with the options given' },
  DEVENV_PEBBLE_START: { kind: 'unavailable', meaning: 'Pebble or challtestsrv exited or did not listen while starting; the message has its last output' },
  DEVENV_PEBBLE_MANAGEMENT: { kind: 'upstream', meaning: 'Pebble\'s management API did not give a root or intermediate' },
  DEVENV_CHALLTESTSRV: { kind: 'upstream', meaning: 'challtestsrv refused an A record for the demo' },

  // The agent on the instance
  AGENT_ENROLL_FAILED: { kind: 'upstream', meaning: 'the plane refused the enrollment, answered something else, or could not be reached' },
  AGENT_SERVER_SPEAKS_TLS: { kind: 'unavailable', meaning: '`--server http://...` against a port that speaks TLS; use https://' },
  AGENT_SERVER_NOT_TLS: { kind: 'unavailable', meaning: '`--server https://...` against a port that speaks plain HTTP' },
  AGENT_SERVER_UNTRUSTED: { kind: 'authentication', meaning: 'the plane\'s certificate does not chain to a CA the agent trusts; pass `--server-ca`' },
  AGENT_SERVER_NAME_MISMATCH: { kind: 'authentication', meaning: 'the plane\'s certificate is trusted but names another host than `--server`' },
  AGENT_SERVER_UNREACHABLE: { kind: 'unavailable', meaning: 'the agent cannot open a connection to `--server`' },
  AGENT_GROUP_UNKNOWN: { kind: 'bad-input', meaning: '`certplane agent --group`: no such group on this instance' },
  AGENT_STATE_PERMISSIONS: { kind: 'forbidden', meaning: 'the agent\'s state directory or a file in it may be read or written by others' },
  AGENT_STATE_IO: { kind: 'internal', meaning: 'the agent could not read or write its state directory' },
  AGENT_IDENTITY_INVALID: { kind: 'internal', meaning: 'the agent\'s identity files are missing or malformed; enroll again' },
  AGENT_IDENTITY_MISMATCH: { kind: 'refused', meaning: 'a renewed agent certificate is not for the key the agent asked for' },
  AGENT_JOURNAL_CORRUPT: { kind: 'internal', meaning: 'the agent\'s installation journal cannot be read' },
  AGENT_BAD_CERTIFICATE_ID: { kind: 'bad-input', meaning: 'the plane named a certificate id the agent refuses as a file name' },
  AGENT_PENDING_KEY_CONFLICT: { kind: 'conflict', meaning: 'a pending key was discarded while it was being created; the plane asks for the CSR again' },
  AGENT_NO_PENDING_KEY: { kind: 'conflict', meaning: 'a delivery for a certificate with no pending key on this instance' },
  AGENT_FINGERPRINT_MISMATCH: { kind: 'refused', meaning: 'the delivered leaf is not the one the plane announced' },
  AGENT_KEY_MISMATCH: { kind: 'refused', meaning: 'the delivered leaf is not for the pending key' },
  AGENT_CHAIN_UNVERIFIED: { kind: 'refused', meaning: 'the delivered chain does not verify on the instance' },
  AGENT_RELOAD_FAILED: { kind: 'internal', meaning: 'the reload command failed after installation' },
  AGENT_NO_HTTP01: { kind: 'unavailable', meaning: 'the agent runs without `--http01-port`, so it cannot answer http-01' },
  AGENT_REVOCATION_CERTIFICATE_INVALID: { kind: 'bad-input', meaning: 'the agent was asked to sign a revocation for something that is not a certificate' },
  AGENT_REVOCATION_KEY_UNKNOWN: { kind: 'not-found', meaning: 'the agent holds no key for the certificate to revoke (never did, or replaced it since)' },
  AGENT_REVOCATION_FAILED: { kind: 'internal', meaning: 'the agent could not sign a revocation request for an unexpected reason; the message says why' },
  AGENT_BAD_CHALLENGE_TOKEN: { kind: 'bad-input', meaning: 'an http-01 token that is not base64url' },
  AGENT_BAD_KEY_AUTHORIZATION: { kind: 'bad-input', meaning: 'an http-01 key authorization that does not belong to its token' },
  AGENT_HTTP01_LISTEN_FAILED: { kind: 'unavailable', meaning: 'the agent cannot listen on its `--http01-port`' },
} as const satisfies Record<string, CatalogueEntry>;

/** A code certplane emits: the compiler refuses any other. */
export type ErrorCode = keyof typeof CATALOGUE;

/** The codes as constants, so that a typo is a compile error and a search finds every use. */
export const ErrorCode: { readonly [C in ErrorCode]: C } = Object.freeze(Object.fromEntries(Object.keys(CATALOGUE).map((code) => [code, code])) as { [C in ErrorCode]: C });

/** Every entry, in catalogue order, for the error reference and its tests. */
export const CATALOGUE_ENTRIES: readonly (CatalogueEntry & { readonly code: ErrorCode })[] = Object.entries(CATALOGUE).map(([code, entry]) => ({ code: code as ErrorCode, ...entry }));

/** True for a code in the catalogue: for codes that arrive from elsewhere (an HTTP answer, a channel message). */
export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(CATALOGUE, code);
}

export function kindOf(code: ErrorCode): ErrorKind {
  return CATALOGUE[code].kind;
}

/** The HTTP status an API answers `code` with. */
export function httpStatusOf(code: ErrorCode): number {
  const entry: CatalogueEntry = CATALOGUE[code];
  return entry.status ?? STATUS_BY_KIND[entry.kind];
}

/** The exit code of `certplane` when a command fails with `code`. */
export function exitCodeOf(code: ErrorCode): number {
  return kindOf(code) === 'bad-input' ? FailureExitCode.BAD_INPUT : FailureExitCode.FAILED;
}

/** The close code of the agent channel when the plane closes it because of `code`. */
export function channelCloseOf(code: ErrorCode): number {
  const entry: CatalogueEntry = CATALOGUE[code];
  return entry.channelClose ?? ChannelCloseCode.PROTOCOL_ERROR;
}
