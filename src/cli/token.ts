/**
 * `xportrait-cam token --room R --role view --ttl 1h`: prints a signed, expiring access token for a server started
 * with the same `--secret` (src/server/auth.ts). With `--url`, prints ready-made links instead.
 */
import { Command, Option } from 'commander';
import { z } from 'zod';
import { isValidRoomName, MIN_SECRET_LENGTH, parseTtl, ROLES, ROOM_NAME_RULE, signToken, type Role } from '../server/auth.ts';
import { UsageError } from './usage-error.ts';
import { errorMessage } from '../util/error-message.ts';

const tokenOptions = z.object({
  room: z.string().trim().refine((r) => r === '*' || isValidRoomName(r), { message: `must be ${ROOM_NAME_RULE}, or * for every room` }),
  role: z.enum(ROLES as [Role, ...Role[]], { message: 'must be publish or view' }),
  ttl: z.string().transform((t, ctx) => {
    try {
      return parseTtl(t);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: errorMessage(err) });
      return z.NEVER;
    }
  }),
  secret: z.string({ message: 'is required (the same secret the server was started with)' }).min(MIN_SECRET_LENGTH, `must be at least ${MIN_SECRET_LENGTH} characters`),
  url: z
    .string()
    .url('must be a URL like https://cam.example.org:8080')
    .transform((u) => u.replace(/\/+$/, ''))
    .optional(),
});

export function addTokenCommand(program: Command): void {
  program
    .command('token')
    .description('Print a signed access token for a room (the server must run with the same --secret).')
    .addOption(new Option('--room <name>', `room the token is for (${ROOM_NAME_RULE}; * = every room)`).env('XPORTRAIT_ROOM').default('main'))
    .addOption(new Option('--role <role>', 'publish (send an avatar into the room; may also view) or view').choices(ROLES).default('view'))
    .addOption(new Option('--ttl <duration>', 'lifetime: seconds or 30m, 12h, 7d').default('12h'))
    .addOption(new Option('--secret <secret>', 'the server\'s --secret').env('XPORTRAIT_SECRET'))
    .addOption(new Option('--url <base>', 'the server\'s address as others reach it: print links (viewer, OBS, WHEP, publisher) instead of the bare token').env('XPORTRAIT_PUBLIC_URL'))
    .action(async (raw: Record<string, unknown>) => {
      const parsed = tokenOptions.safeParse(raw);
      if (!parsed.success) {
        throw new UsageError(`invalid options:\n${parsed.error.issues.map((i) => `  --${String(i.path[0])}: ${i.message}`).join('\n')}`);
      }
      const o = parsed.data;
      const token = await signToken(o.secret, { room: o.room, role: o.role, ttlSeconds: o.ttl });
      if (!o.url) {
        process.stdout.write(`${token}\n`);
        return;
      }
      const expires = new Date(Date.now() + o.ttl * 1000).toISOString();
      const room = o.room === '*' ? 'main' : o.room;
      // Viewer links never carry publishing rights: a publish token gets a view token beside it for those.
      const viewToken = o.role === 'view' ? token : await signToken(o.secret, { room: o.room, role: 'view', ttlSeconds: o.ttl });
      const q = (t: string) => `token=${encodeURIComponent(t)}`;
      const lines = [`# ${o.role} token for room ${o.room === '*' ? '* (every room)' : `"${o.room}"`}, expires ${expires}`];
      if (o.role === 'publish') lines.push(`publisher page: ${o.url}/?room=${room}&${q(token)}`, `publish token:  ${token}`);
      lines.push(
        `viewer page:    ${o.url}/view/${room}?${q(viewToken)}`,
        `OBS source:     ${o.url}/obs/${room}?${q(viewToken)}`,
        `WHEP endpoint:  ${o.url}/whep/${room}`,
        `view token:     ${viewToken}`,
      );
      process.stdout.write(`${lines.join('\n')}\n`);
    });
}
