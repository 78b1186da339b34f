/**
 * A restricted unpickler for torch state dicts. It interprets the pickle opcodes that `torch.save` emits (protocol 2,
 * plus the few protocol 3/4 framing opcodes) into plain data, and resolves globals only against a fixed allow-list that
 * maps each to a pure data constructor: nothing named by the file is ever executed or imported. Any other opcode is an
 * error naming it.
 *
 * A global outside the allow-list becomes an inert `PyOpaque` placeholder (calling it yields another placeholder;
 * nothing runs). Training checkpoints keep such objects beside the weights (Lightning's `hyper_parameters`, an
 * argparse Namespace...). The torch reader ignores them there, and fails naming the global when one stands where the
 * state dict or a tensor must be.
 */
import type { DType } from './dtype.ts';

/** A storage referenced by a persistent id: ('storage', torch.XStorage, key, location, numel). */
export interface StorageRef {
  readonly kind: 'storage';
  readonly key: string;
  readonly dtype: DType;
  readonly location: string;
  /** Number of elements of the whole storage. */
  readonly numel: number;
}

/** A tensor view of a storage, as `torch._utils._rebuild_tensor_v2` describes it. Offsets and strides in elements. */
export interface TensorRef {
  readonly kind: 'tensor';
  readonly storage: StorageRef;
  readonly storageOffset: number;
  readonly shape: number[];
  readonly stride: number[];
}

/** A resolved (allow-listed) global: a data constructor we implement ourselves. */
interface PyGlobal {
  readonly kind: 'global';
  readonly module: string;
  readonly name: string;
}

/** An object built by a global outside the allow-list: its name only, never instantiated. */
export interface PyOpaque {
  readonly kind: 'opaque';
  /** module.name of the global that would have built it. */
  readonly qual: string;
}

/** Python dicts (and OrderedDicts) become Maps, lists and tuples arrays, str strings, int number (or bigint), None null. */
export type PyValue = null | boolean | number | bigint | string | Uint8Array | PyValue[] | Map<PyValue, PyValue> | TensorRef | StorageRef | PyGlobal | PyOpaque;

export const STORAGE_DTYPES: Record<string, DType> = {
  FloatStorage: 'float32',
  HalfStorage: 'float16',
  BFloat16Storage: 'bfloat16',
  DoubleStorage: 'float64',
  LongStorage: 'int64',
  IntStorage: 'int32',
  ShortStorage: 'int16',
  CharStorage: 'int8',
  ByteStorage: 'uint8',
  BoolStorage: 'bool',
};

const ALLOWED_CALLABLES = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
  '_codecs.encode',
]);

function isAllowedGlobal(module: string, name: string): boolean {
  if (module === 'torch' && name in STORAGE_DTYPES) return true;
  return ALLOWED_CALLABLES.has(`${module}.${name}`);
}

const MARK = Symbol('mark');
type StackItem = PyValue | typeof MARK;

const OPNAMES: Record<number, string> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT', 0x4a: 'BININT',
  0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID', 0x51: 'BINPERSID', 0x52: 'REDUCE',
  0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING', 0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND',
  0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT', 0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET',
  0x69: 'INST', 0x6a: 'LONG_BINGET', 0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT',
  0x72: 'LONG_BINPUT', 0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT',
  0x80: 'PROTO', 0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2', 0x87: 'TUPLE3',
  0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES',
  0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET',
  0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

export class PickleError extends Error {}

function asInt(v: PyValue, what: string): number {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'bigint' && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= -BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  throw new PickleError(`expected an integer for ${what}, got ${describe(v)}`);
}

function asIntTuple(v: PyValue, what: string): number[] {
  if (!Array.isArray(v)) throw new PickleError(`expected a tuple for ${what}, got ${describe(v)}`);
  return v.map((x, i) => asInt(x, `${what}[${i}]`));
}

export function describe(v: PyValue | undefined): string {
  if (v === null) return 'None';
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return `a tuple/list of ${v.length}`;
  if (v instanceof Map) return `a dict of ${v.size}`;
  if (v instanceof Uint8Array) return `bytes(${v.length})`;
  if (typeof v === 'object') {
    if (v.kind === 'global') return `${v.module}.${v.name}`;
    if (v.kind === 'opaque') return `an object built by the Python global '${v.qual}'`;
    return `a ${v.kind}`;
  }
  return `${typeof v} ${String(v).slice(0, 40)}`;
}

/**
 * Parses a pickle into plain values. `persistentLoad` turns a persistent id (a tuple) into a value; torch uses it
 * for storages.
 */
export function unpickle(data: Uint8Array, persistentLoad: (pid: PyValue) => PyValue, opaqueGlobals: Set<string> = new Set()): PyValue {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const stack: StackItem[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let pos = 0;

  const need = (n: number) => {
    if (pos + n > buf.length) throw new PickleError(`pickle truncated at byte ${pos}`);
  };
  const u8 = () => { need(1); return buf[pos++]; };
  const u16 = () => { need(2); const v = buf.readUInt16LE(pos); pos += 2; return v; };
  const u32 = () => { need(4); const v = buf.readUInt32LE(pos); pos += 4; return v; };
  const bytes = (n: number) => { need(n); const v = buf.subarray(pos, pos + n); pos += n; return v; };
  const line = () => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) throw new PickleError(`pickle truncated at byte ${pos}`);
    const s = buf.toString('latin1', pos, end);
    pos = end + 1;
    return s;
  };
  const pop = (): PyValue => {
    const v = stack.pop();
    if (v === undefined || v === MARK) throw new PickleError(`pickle stack underflow at byte ${pos}`);
    return v;
  };
  const top = (): PyValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) throw new PickleError(`pickle stack underflow at byte ${pos}`);
    return v;
  };
  const popMark = (): PyValue[] => {
    const m = marks.pop();
    if (m === undefined) throw new PickleError(`pickle MARK missing at byte ${pos}`);
    const items = stack.splice(m) as StackItem[];
    items.shift(); // the MARK itself
    return items as PyValue[];
  };
  const setItems = (d: PyValue, kv: PyValue[]) => {
    if (isOpaque(d)) return; // contents of an object we do not build are dropped
    if (!(d instanceof Map)) throw new PickleError(`SETITEM(S) on ${describe(d)}`);
    for (let i = 0; i + 1 < kv.length; i += 2) d.set(kv[i], kv[i + 1]);
  };
  const makeGlobal = (module: string, name: string): PyGlobal | PyOpaque => {
    if (!isAllowedGlobal(module, name)) {
      opaqueGlobals.add(`${module}.${name}`);
      return { kind: 'opaque', qual: `${module}.${name}` };
    }
    return { kind: 'global', module, name };
  };

  for (;;) {
    const opPos = pos;
    const op = u8();
    switch (op) {
      case 0x80: u8(); break; // PROTO
      case 0x95: bytes(8); break; // FRAME: framing is only a read-ahead hint
      case 0x2e: { // STOP
        const v = pop();
        return v;
      }
      case 0x28: marks.push(stack.length); stack.push(MARK); break;
      case 0x30: pop(); break;
      case 0x31: popMark(); break;
      case 0x32: stack.push(top()); break;
      case 0x4e: stack.push(null); break;
      case 0x88: stack.push(true); break;
      case 0x89: stack.push(false); break;
      case 0x4a: { need(4); stack.push(buf.readInt32LE(pos)); pos += 4; break; }
      case 0x4b: stack.push(u8()); break;
      case 0x4d: stack.push(u16()); break;
      case 0x8a: case 0x8b: { // LONG1 / LONG4: little-endian two's complement
        const n = op === 0x8a ? u8() : u32();
        const b = bytes(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
        if (n > 0 && b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: { need(8); stack.push(buf.readDoubleBE(pos)); pos += 8; break; }
      case 0x58: { const n = u32(); stack.push(bytes(n).toString('utf8')); break; }
      case 0x8c: { const n = u8(); stack.push(bytes(n).toString('utf8')); break; }
      case 0x8d: { need(8); const n = Number(buf.readBigUInt64LE(pos)); pos += 8; stack.push(bytes(n).toString('utf8')); break; }
      case 0x54: { const n = u32(); stack.push(bytes(n).toString('latin1')); break; }
      case 0x55: { const n = u8(); stack.push(bytes(n).toString('latin1')); break; }
      case 0x42: { const n = u32(); stack.push(new Uint8Array(bytes(n))); break; }
      case 0x43: { const n = u8(); stack.push(new Uint8Array(bytes(n))); break; }
      case 0x29: stack.push([]); break;
      case 0x74: stack.push(popMark()); break;
      case 0x85: { const a = pop(); stack.push([a]); break; }
      case 0x86: { const b = pop(); const a = pop(); stack.push([a, b]); break; }
      case 0x87: { const c = pop(); const b = pop(); const a = pop(); stack.push([a, b, c]); break; }
      case 0x5d: stack.push([]); break;
      case 0x61: { const v = pop(); const l = top(); if (isOpaque(l)) break; if (!Array.isArray(l)) throw new PickleError(`APPEND on ${describe(l)}`); l.push(v); break; }
      case 0x65: { const items = popMark(); const l = top(); if (isOpaque(l)) break; if (!Array.isArray(l)) throw new PickleError(`APPENDS on ${describe(l)}`); l.push(...items); break; }
      case 0x7d: stack.push(new Map()); break;
      case 0x73: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; }
      case 0x75: { const kv = popMark(); setItems(top(), kv); break; }
      case 0x71: memo.set(u8(), top()); break;
      case 0x72: memo.set(u32(), top()); break;
      case 0x94: memo.set(memo.size, top()); break;
      case 0x68: case 0x6a: {
        const idx = op === 0x68 ? u8() : u32();
        if (!memo.has(idx)) throw new PickleError(`pickle memo ${idx} missing at byte ${opPos}`);
        stack.push(memo.get(idx) as PyValue);
        break;
      }
      case 0x63: { const module = line(); const name = line(); stack.push(makeGlobal(module, name)); break; }
      case 0x93: {
        const name = pop();
        const module = pop();
        if (typeof name !== 'string' || typeof module !== 'string') throw new PickleError('STACK_GLOBAL with non-string names');
        stack.push(makeGlobal(module, name));
        break;
      }
      case 0x51: stack.push(persistentLoad(pop())); break;
      case 0x52: case 0x81: { // REDUCE / NEWOBJ: call an allow-listed constructor
        const args = pop();
        const fn = pop();
        if (!Array.isArray(args)) throw new PickleError(`${OPNAMES[op]} with ${describe(args)} as arguments`);
        stack.push(callGlobal(fn, args));
        break;
      }
      case 0x62: { // BUILD: set state. OrderedDict state (torch's `_metadata`) is not needed; tensors have none in v2.
        pop();
        break;
      }
      default: {
        const name = OPNAMES[op] ?? `0x${op.toString(16).padStart(2, '0')}`;
        throw new PickleError(`unsupported pickle opcode ${name} (0x${op.toString(16).padStart(2, '0')}) at byte ${opPos}; a torch state dict does not need it`);
      }
    }
  }
}

export function isOpaque(v: PyValue | undefined): v is PyOpaque {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Map) && !(v instanceof Uint8Array) && v.kind === 'opaque';
}

/** The allow-listed globals a placeholder is never built for: text for error messages. */
export function notAllowedMessage(qual: string): string {
  return `the Python global '${qual}', which is not allowed in a state dict (nothing from the file is executed)`;
}

function callGlobal(fn: PyValue, args: PyValue[]): PyValue {
  if (isOpaque(fn)) return { kind: 'opaque', qual: fn.qual }; // recorded, never called
  if (fn === null || typeof fn !== 'object' || Array.isArray(fn) || fn instanceof Map || fn instanceof Uint8Array || fn.kind !== 'global') {
    throw new PickleError(`REDUCE on ${describe(fn)}, which is not a callable`);
  }
  const qual = `${fn.module}.${fn.name}`;
  switch (qual) {
    case 'collections.OrderedDict': {
      const m = new Map<PyValue, PyValue>();
      const items = args[0];
      if (Array.isArray(items)) for (const kv of items) if (Array.isArray(kv) && kv.length === 2) m.set(kv[0], kv[1]);
      return m;
    }
    case 'torch._utils._rebuild_tensor_v2': {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      const storage = args[0];
      if (storage === null || typeof storage !== 'object' || !('kind' in storage) || storage.kind !== 'storage') {
        throw new PickleError(`_rebuild_tensor_v2 expects a storage, got ${describe(storage)}`);
      }
      const shape = asIntTuple(args[2], 'tensor size');
      const stride = asIntTuple(args[3], 'tensor stride');
      if (shape.length !== stride.length) throw new PickleError(`tensor size ${shape} and stride ${stride} differ in rank`);
      return { kind: 'tensor', storage, storageOffset: asInt(args[1], 'storage offset'), shape, stride };
    }
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
      // (data, requires_grad, backward_hooks[, state]): a Parameter is its data tensor for our purposes.
      return args[0];
    case '_codecs.encode': {
      // protocol 2 pickles Python 3 bytes as _codecs.encode(str, 'latin1')
      const s = args[0];
      if (typeof s !== 'string') throw new PickleError(`_codecs.encode of ${describe(s)}`);
      return new Uint8Array(Buffer.from(s, 'latin1'));
    }
    default:
      throw new PickleError(`the checkpoint calls '${qual}', which is not a constructor a state dict needs`);
  }
}

/** The persistent-id loader for torch zip checkpoints: ('storage', torch.XStorage, key, location, numel). */
export function torchPersistentLoad(pid: PyValue): StorageRef {
  if (!Array.isArray(pid) || pid.length < 5 || pid[0] !== 'storage') {
    throw new PickleError(`unsupported persistent id ${describe(pid)}; expected ('storage', type, key, location, numel)`);
  }
  const type = pid[1];
  if (isOpaque(type)) throw new PickleError(`unsupported storage type ${type.qual}`);
  if (type === null || typeof type !== 'object' || Array.isArray(type) || type instanceof Map || type instanceof Uint8Array || type.kind !== 'global') {
    throw new PickleError(`persistent id with storage type ${describe(type)}`);
  }
  const dtype = STORAGE_DTYPES[type.name];
  if (!dtype) throw new PickleError(`unsupported storage type ${type.module}.${type.name}`);
  const key = pid[2];
  if (typeof key !== 'string') throw new PickleError(`storage key ${describe(key)} is not a string`);
  return { kind: 'storage', key, dtype, location: String(pid[3]), numel: asInt(pid[4], 'storage size') };
}
