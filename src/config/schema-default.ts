/**
 * The default a zod field declares, as the text commander shows in --help and passes on: the schema states each
 * default once, and the flag takes it from there.
 */
import { z } from 'zod';

export function schemaDefault(field: z.ZodType): string {
  if (!(field instanceof z.ZodDefault)) throw new Error('schemaDefault: the field declares no default');
  return String(field.def.defaultValue);
}
