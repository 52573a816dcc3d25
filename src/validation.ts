/**
 * One way to say what a schema refused, for every surface that validates input: the
 * configuration, the API, the agent channel and the admin console. One line per problem,
 * "where: what", where `where` is the dotted path of the refused value, so the person reading
 * it finds the field (or variable) without knowing which validator spoke. An unknown field is
 * named with its own path, because a typo in a field name is the usual cause.
 */

/** What formatting needs of a problem: zod's issues, and Fastify's validation entries once mapped, both fit. */
export interface ValidationIssue {
  readonly path: readonly PropertyKey[];
  readonly message: string;
  readonly code?: string;
  /** The unknown fields of an `unrecognized_keys` issue. */
  readonly keys?: readonly string[];
}

export interface DescribeOptions {
  /** What the path is relative to, shown before it (`body`, `querystring`); nothing for variables named at the top. */
  readonly under?: string;
  /** The name of the whole input, for a problem with no path (`environment`, `message`, `request`). */
  readonly whole: string;
  /** What an unknown field is called, when the surface has a better word than "not a known field". */
  readonly unknownField?: string;
}

export function describeIssues(issues: readonly ValidationIssue[], options: DescribeOptions): string[] {
  const where = (path: readonly PropertyKey[]) => (path.length === 0 ? options.whole : [options.under, ...path.map(String)].filter((part) => part !== undefined && part !== '').join('.'));
  return issues.flatMap((issue) =>
    issue.code === 'unrecognized_keys' && issue.keys && issue.keys.length > 0
      ? [`${issue.keys.map((key) => where([...issue.path, key])).join(', ')}: ${options.unknownField ?? 'not a known field'}`]
      : [`${where(issue.path)}: ${issue.message}`],
  );
}
