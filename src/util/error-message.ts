/** The message of anything thrown: an Error's message, else its text (a thrown string, a rejected value). */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
