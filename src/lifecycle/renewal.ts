/**
 * When a certificate should be renewed, without the CA's advice: two thirds into its
 * lifetime, with jitter so a fleet issued together does not renew together (and does not
 * meet the CA's rate limits together). With ARI the CA's window wins (see acme/ari.ts).
 */

/** Fraction of the lifetime after which a certificate is renewed. */
export const RENEW_AT_FRACTION = 2 / 3;
/** Jitter, as a fraction of the lifetime, applied either way around the renewal time. */
export const JITTER_FRACTION = 1 / 30;
/** Past this fraction of its lifetime an installed certificate that was not renewed is at risk. */
export const AT_RISK_FRACTION = 5 / 6;

export function lifetimeRenewalTime(notBefore: Date, notAfter: Date, random: () => number = Math.random): Date {
  const lifetime = notAfter.getTime() - notBefore.getTime();
  const jitter = (random() * 2 - 1) * JITTER_FRACTION * lifetime;
  return new Date(notBefore.getTime() + RENEW_AT_FRACTION * lifetime + jitter);
}

/** True when the certificate has used up more of its lifetime than renewal should ever let it. */
export function atRisk(notBefore: Date, notAfter: Date, now: Date): boolean {
  const lifetime = notAfter.getTime() - notBefore.getTime();
  return now.getTime() >= notBefore.getTime() + AT_RISK_FRACTION * lifetime;
}
