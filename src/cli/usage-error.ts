/** A command was called wrongly (a bad flag value, a missing file): main prints the message and exits with 2. */
export class UsageError extends Error {}
